import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

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
