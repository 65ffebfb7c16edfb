from datetime import date

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from licensing.models import Agreement, OrderLine, Product, Program
from tests.factories import AgreementFactory, CustomerFactory, OrderFactory, OrderLineFactory

pytestmark = pytest.mark.django_db


def _refused(instance, message: str) -> None:
    """Assert that validation names the problem and that the database refuses the row too."""
    with pytest.raises(ValidationError, match=f"(?i){message}"):
        instance.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        instance.save()


def test_agreement_must_start_before_it_ends():
    customer = CustomerFactory()
    agreement = Agreement(
        program=Program.OL,
        number="87213456",
        customer=customer,
        partner=customer.partner,
        starts_on=date(2026, 5, 1),
        ends_on=date(2026, 5, 1),
    )
    _refused(agreement, "must start before it ends")


def test_an_agreement_number_typed_in_another_case_is_the_one_held_and_new_ones_are_capitals():
    existing = AgreementFactory(program=Program.OV, number="V4412871")
    typed = AgreementFactory.build(
        program=Program.OV, number="v4412871", customer=existing.customer, partner=existing.partner
    )
    with pytest.raises(ValidationError, match="already exists in this program"):
        typed.full_clean()
    fresh = AgreementFactory.build(
        program=Program.OV, number=" v4412872", customer=existing.customer, partner=existing.partner
    )
    fresh.full_clean()
    assert fresh.number == "V4412872"


def test_agreement_number_is_unique_within_its_program_only():
    existing = AgreementFactory(program=Program.OV, number="V4412871")
    duplicate = AgreementFactory.build(
        program=Program.OV, number="V4412871", customer=existing.customer, partner=existing.partner
    )
    _refused(duplicate, "already exists in this program")
    other_program = AgreementFactory(program=Program.OVS, number="V4412871", customer=existing.customer)
    assert other_program.pk


def test_agreement_term_follows_the_program():
    assert Agreement.term_end_for(Program.OL, date(2026, 2, 28)) == date(2028, 2, 28)
    assert Agreement.term_end_for(Program.OV, date(2026, 1, 15)) == date(2029, 1, 15)
    assert Agreement.term_end_for(Program.OVS, date(2024, 2, 29)) == date(2027, 2, 28)


def test_product_term_must_be_positive():
    _refused(Product(part_number="Q5Y-00003", description="O365 E3", term_months=0), "at least one month")


def test_order_license_number_is_unique():
    order = OrderFactory(license_number="61234567")
    duplicate = OrderFactory.build(license_number="61234567", agreement=order.agreement)
    _refused(duplicate, "license number already exists")


def test_order_line_quantity_must_be_positive():
    line = OrderLineFactory.build(order=OrderFactory(), quantity=0)
    line.product.save()
    _refused(line, "at least one seat")


def test_order_line_coverage_must_start_before_it_ends():
    line = OrderLineFactory.build(order=OrderFactory(), starts_on=date(2026, 12, 1), ends_on=date(2026, 11, 1))
    line.product.save()
    _refused(line, "Coverage must start before it ends")


def test_order_line_number_is_unique_within_its_order():
    line = OrderLineFactory(line_number=1)
    duplicate = OrderLineFactory.build(order=line.order, line_number=1, product=line.product)
    _refused(duplicate, "already has a line with this number")
    assert OrderLineFactory(line_number=1).pk  # the same number on another order is fine


def test_an_order_line_never_has_more_seats_allocated_than_it_bought():
    line = OrderLineFactory(quantity=10)
    line.seats_allocated = 11
    with pytest.raises(IntegrityError), transaction.atomic():
        line.save(update_fields=["seats_allocated"])
    line.refresh_from_db()
    assert line.seats_allocated == 0
    assert line.seats_left == 10
    with pytest.raises(ValidationError, match="cannot be allocated more than once"):
        OrderLine(
            order=line.order,
            line_number=2,
            product=line.product,
            quantity=1,
            kind=OrderLine.Kind.NEW,
            starts_on=line.starts_on,
            ends_on=line.ends_on,
            seats_allocated=2,
        ).full_clean()


def test_the_database_refuses_an_agreement_number_held_in_another_case():
    existing = AgreementFactory(program=Program.OV, number="V4412871")
    other_case = AgreementFactory.build(
        program=Program.OV, number="v4412871", customer=existing.customer, partner=existing.partner
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        other_case.save()  # past every form and import: the constraint itself refuses it
    assert AgreementFactory(program=Program.OVS, number="v4412871", customer=existing.customer).pk


@pytest.mark.django_db(transaction=True)
def test_the_migration_names_agreement_numbers_already_held_in_two_cases():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = (
        ("licensing", "0010_agreement_number_upper_index"),
        ("licensing", "0011_agreement_number_unique_in_any_case"),
    )
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    try:
        apps = executor.loader.project_state([before]).apps
        partner = apps.get_model("tenants", "Partner").objects.create(name="Reseller", mpn_id="4412345")
        customer = apps.get_model("tenants", "Customer").objects.create(
            name="Contoso", name_key="contoso", email="it@contoso.example", partner=partner
        )
        held = apps.get_model("licensing", "Agreement").objects
        for number in ("V1000001", "v1000001"):
            held.create(
                program="OV",
                number=number,
                customer=customer,
                partner=customer.partner,
                starts_on=date(2026, 1, 1),
                ends_on=date(2029, 1, 1),
            )
        executor = MigrationExecutor(connection)
        with pytest.raises(RuntimeError, match=r"OV: V1000001 \(#\d+\), v1000001 \(#\d+\)"):
            executor.migrate([after])
        held.filter(number="v1000001").delete()
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    assert ("licensing", after[1]) in MigrationExecutor(connection).loader.applied_migrations
