import importlib
import uuid

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse

from tenants.models import Customer, Partner, Tenant
from tests.factories import CustomerFactory, PartnerFactory, TenantFactory

pytestmark = pytest.mark.django_db


def test_partner_mpn_id_is_unique():
    PartnerFactory(mpn_id="4412345")
    duplicate = Partner(name="Other", mpn_id="4412345")
    with pytest.raises(ValidationError, match="MPN ID already exists"):
        duplicate.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        duplicate.save()


def test_customer_names_are_unique_regardless_of_case_and_spaces():
    partner = PartnerFactory()
    CustomerFactory(name="Northwind Traders", partner=partner)
    duplicate = Customer(name="  NORTHWIND traders ", email="x@example.com", partner=partner)
    with pytest.raises(IntegrityError), transaction.atomic():
        duplicate.save()
    duplicate.name = "northwind traders"
    with pytest.raises(ValidationError, match="already exists"):
        duplicate.full_clean()


@pytest.mark.parametrize(
    ("held", "typed"),
    [
        ("Ärztekammer Wien", "ÄRZTEKAMMER WIEN"),
        ("École Polytechnique", "ÉCOLE POLYTECHNIQUE"),
        ("Østfold Kraft AS", "østfold kraft as"),
        ("Όμιλος Επιχειρήσεων ΑΕ", "ΌΜΙΛΟΣ ΕΠΙΧΕΙΡΉΣΕΩΝ ΑΕ"),  # noqa: RUF001 (Greek, as written)
        ("Straße Bau GmbH", "STRASSE BAU GMBH"),
    ],
)
def test_customer_names_beyond_ascii_are_the_same_name_in_any_case(held, typed):
    partner = PartnerFactory()
    CustomerFactory(name=held, partner=partner)
    duplicate = Customer(name=typed, email="x@example.com", partner=partner)
    with pytest.raises(ValidationError, match="already exists"):
        duplicate.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        duplicate.save()


def test_admin_customer_form_refuses_a_duplicate_name_on_the_name_field(client, superuser):
    partner = PartnerFactory()
    CustomerFactory(name="Ärztekammer Wien", partner=partner)
    client.force_login(superuser)

    response = client.post(
        reverse("admin:tenants_customer_add"),
        {
            "name": " ÄRZTEKAMMER WIEN ",
            "email": "it@aekwien.example",
            "country": "AT",
            "partner": partner.pk,
            "tenants-TOTAL_FORMS": "0",
            "tenants-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["name"] == [
        "A customer with this name already exists (names ignore case)."
    ]
    assert Customer.objects.count() == 1


def test_renaming_a_customer_keeps_its_name_key_with_update_fields():
    customer = CustomerFactory(name="Fabrikam")
    customer.name = "Ärztekammer Wien"
    customer.save(update_fields=["name"])
    assert Customer.objects.filter(name_key="ärztekammer wien").get() == customer


def test_migration_stops_naming_customers_whose_names_are_the_same():
    fill = importlib.import_module("tenants.migrations.0003_customer_name_key").fill_name_keys
    partner = PartnerFactory()
    first = CustomerFactory(name="Ärztekammer Wien", partner=partner)
    CustomerFactory(name="Other", partner=partner)
    # Two rows the old constraint let through on SQLite, whose LOWER() folds ASCII only.
    Customer.objects.filter(name="Other").update(name="ÄRZTEKAMMER WIEN")
    with pytest.raises(RuntimeError, match=rf"'Ärztekammer Wien' \(id {first.pk}\) and 'ÄRZTEKAMMER WIEN'"):
        fill(apps, None)


def test_migration_gives_every_customer_its_name_key():
    fill = importlib.import_module("tenants.migrations.0003_customer_name_key").fill_name_keys
    customer = CustomerFactory(name="Østfold Kraft AS")
    Customer.objects.update(name_key="")
    fill(apps, None)
    customer.refresh_from_db()
    assert customer.name_key == "østfold kraft as"


def test_customer_name_is_stored_trimmed():
    customer = CustomerFactory(name="  Tailspin Toys  ")
    customer.refresh_from_db()
    assert customer.name == "Tailspin Toys"


@pytest.mark.parametrize(
    "domain",
    [
        "Contoso.onmicrosoft.com",
        "contoso.com",
        "con-toso.onmicrosoft.com",
        "a" * 28 + ".onmicrosoft.com",
        ".onmicrosoft.com",
        "contoso.onmicrosoft.com.evil.example",
    ],
)
def test_tenant_default_domain_must_be_a_lowercase_onmicrosoft_name(domain):
    customer = CustomerFactory()
    tenant = Tenant(tenant_id=uuid.uuid4(), default_domain=domain, customer=customer)
    with pytest.raises(ValidationError, match=r"name\.onmicrosoft\.com"):
        tenant.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        tenant.save()


def test_tenant_default_domain_of_27_characters_is_accepted():
    tenant = TenantFactory(default_domain="a" * 27 + ".onmicrosoft.com")
    tenant.full_clean()


def test_tenant_id_and_default_domain_are_unique():
    existing = TenantFactory()
    same_id = Tenant(tenant_id=existing.tenant_id, default_domain="other.onmicrosoft.com", customer=existing.customer)
    with pytest.raises(ValidationError, match="tenant ID is already recorded"):
        same_id.full_clean()
    same_domain = Tenant(tenant_id=uuid.uuid4(), default_domain=existing.default_domain, customer=existing.customer)
    with pytest.raises(ValidationError, match="default domain is already recorded"):
        same_domain.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        same_domain.save()


def test_every_change_to_a_tenant_is_in_its_history_with_who(django_user_model):
    user = django_user_model.objects.create_user("clerk")
    tenant = TenantFactory(display_name="Before")
    tenant._history_user = user
    tenant.display_name = "After"
    tenant.save()
    latest = tenant.history.first()
    assert latest.display_name == "After"
    assert latest.history_user == user
    assert tenant.history.count() == 2
