"""Staff sign-in: lockouts after failed attempts, the second factor, idle sessions. Through the login form."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client, override_settings
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from desk.models import LockedAccount, SignInEvent
from tests.browser import authenticator_code, authenticator_for

pytestmark = pytest.mark.django_db
PASSWORD = "pw-for-tests-123"
LOGIN = reverse("admin:login")
INDEX = reverse("admin:index")


def sign_in(client: Client, username: str, password: str = PASSWORD, code: str = "", address: str = "10.0.0.1"):
    return client.post(
        LOGIN,
        {"username": username, "password": password, "otp_token": code, "next": INDEX},
        REMOTE_ADDR=address,
    )


def test_five_wrong_passwords_lock_the_account_with_a_clear_message(make_user):
    make_user("clerk")
    browser = Client()
    for _ in range(4):
        assert "Please enter the correct username and password" in sign_in(browser, "clerk", "wrong").text
    locked = sign_in(browser, "clerk", "wrong")
    assert locked.status_code == 429  # Too Many Requests
    said = " ".join(locked.text.split())
    assert "after 5 wrong attempts sign-in is locked for 30 minutes" in said
    assert "ask a supervisor to unlock the account" in said
    # The right password does not help while locked, from anywhere.
    assert sign_in(browser, "clerk", address="10.9.9.9").status_code == 429
    event = SignInEvent.objects.get(kind=SignInEvent.Kind.LOCKED_OUT)
    assert (event.username, event.ip_address) == ("clerk", "10.0.0.1")


MORNING = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_the_lock_runs_out_after_the_configured_minutes(make_user, time_machine):
    time_machine.move_to(MORNING)
    make_user("clerk")
    browser = Client()
    for _ in range(5):
        sign_in(browser, "clerk", "wrong")
    time_machine.shift(timedelta(minutes=31))
    assert sign_in(browser, "clerk").status_code == 302


def test_signing_in_as_oneself_does_not_clear_the_failures_of_another_account(make_user):
    make_user("clerk")
    make_user("viewer")
    browser = Client()
    # An insider guesses the clerk's password, signing in as themselves between rounds.
    for _ in range(2):
        for _ in range(2):
            sign_in(browser, "clerk", "guess")
        assert sign_in(browser, "viewer").status_code == 302
        browser.logout()
    # The fifth wrong password locks the clerk's account, as if nobody had signed in meanwhile.
    assert sign_in(browser, "clerk", "guess").status_code == 429
    # The viewer's own failures are cleared by the viewer's sign-in, as before.
    for _ in range(4):
        sign_in(browser, "viewer", "typo", address="10.0.0.7")
    assert sign_in(browser, "viewer", address="10.0.0.7").status_code == 302
    browser.logout()
    assert sign_in(browser, "viewer", "typo", address="10.0.0.7").status_code == 200


@override_settings(AXES_FAILURE_LIMIT=3, LOGIN_FAILURE_LIMIT=3)
def test_guessing_many_accounts_from_one_address_locks_the_address(make_user):
    make_user("clerk")
    browser = Client()
    for name in ("anna", "bert", "carl"):
        sign_in(browser, name, "guess", address="10.6.6.6")
    assert sign_in(browser, "clerk", address="10.6.6.6").status_code == 429
    assert sign_in(browser, "clerk", address="10.0.0.2").status_code == 302


def test_a_supervisor_unlocks_an_account_with_a_reason_and_it_is_recorded(make_user, client):
    make_user("clerk")
    boss = make_user("boss", "Supervisor")
    browser = Client()
    for _ in range(5):
        sign_in(browser, "clerk", "wrong")
    client.force_login(boss)
    listing = client.get(reverse("admin:desk_lockedaccount_changelist"))
    assert "Locked until" in listing.text
    attempt = LockedAccount.objects.get(username="clerk")
    url = reverse("admin:desk_lockedaccount_unlock", args=[attempt.pk])
    assert "This field is required" in client.post(url, {"reason": " "}).text
    assert client.post(url, {"reason": "Called from her desk phone; identity checked"}).status_code == 302
    assert sign_in(browser, "clerk").status_code == 302
    event = SignInEvent.objects.get(kind=SignInEvent.Kind.UNLOCKED)
    assert (event.username, event.by, event.reason) == ("clerk", boss, "Called from her desk phone; identity checked")


def test_an_order_processor_cannot_unlock_accounts(make_user, client):
    make_user("clerk")
    for _ in range(5):
        sign_in(Client(), "clerk", "wrong")
    client.force_login(make_user("other"))
    attempt = LockedAccount.objects.get(username="clerk")
    assert (
        client.post(reverse("admin:desk_lockedaccount_unlock", args=[attempt.pk]), {"reason": "x"}).status_code == 403
    )
    assert LockedAccount.objects.filter(username="clerk").exists()


def test_a_supervisor_sets_up_two_factor_before_working(make_user, time_machine):
    time_machine.move_to(MORNING)
    boss = make_user("boss", "Supervisor")
    browser = Client()
    signed_in = sign_in(browser, "boss")
    assert signed_in.url.startswith(reverse("admin:two_factor_setup"))
    # Nothing else opens until the authenticator is confirmed.
    assert browser.get(INDEX).status_code == 302
    setup = browser.get(signed_in.url)
    assert "Your role signs in with a second factor" in setup.text
    # Without the phone at hand, the way out is on the page itself.
    assert f'action="{reverse("admin:two_factor_sign_out")}"' in setup.text
    device = TOTPDevice.objects.get(user=boss, confirmed=False)
    assert "That code is not right" in browser.post(signed_in.url, {"token": "000000", "password": PASSWORD}).text
    assert (
        "Too many wrong codes in a row"
        in browser.post(signed_in.url, {"token": authenticator_code(device), "password": PASSWORD}).text
    )
    time_machine.shift(timedelta(seconds=2))
    # The password too: a session alone does not change how the account signs in.
    assert (
        "That is not your password"
        in browser.post(signed_in.url, {"token": authenticator_code(device), "password": "wrong"}).text
    )
    time_machine.shift(timedelta(seconds=40))
    done = browser.post(signed_in.url, {"token": authenticator_code(device), "password": PASSWORD, "next": INDEX})
    assert done.status_code == 302
    assert browser.get(INDEX).status_code == 200
    assert SignInEvent.objects.filter(kind=SignInEvent.Kind.TWO_FACTOR_ENABLED, username="boss").exists()


def test_a_supervisor_with_an_authenticator_needs_its_code(make_user, time_machine):
    time_machine.move_to(MORNING)
    boss = make_user("boss", "Supervisor")
    phone = authenticator_for(boss)
    browser = Client()
    # The same answer as a wrong password: nothing says the password was right.
    wrong_password = sign_in(browser, "boss", "wrong", code="123456").text
    assert "Please enter the correct username and password" in wrong_password
    for answer in (sign_in(browser, "boss").text, sign_in(browser, "boss", code="123456").text):
        assert "Please enter the correct username and password" in answer
        assert "6-digit" not in answer and "not right" not in answer and "Too many" not in answer
    time_machine.shift(timedelta(seconds=40))
    assert sign_in(browser, "boss", code=authenticator_code(phone)).status_code == 302
    assert browser.get(INDEX).status_code == 200


def test_wrong_codes_count_towards_the_lockout(make_user, time_machine):
    time_machine.move_to(MORNING)
    authenticator_for(make_user("boss", "Supervisor"))
    browser = Client()
    for _ in range(5):
        sign_in(browser, "boss", code="000000")
        time_machine.shift(timedelta(seconds=20))
    assert sign_in(browser, "boss", code="000000").status_code == 429


def test_two_factor_is_optional_for_an_order_processor(make_user):
    clerk = make_user("clerk")
    browser = Client()
    assert sign_in(browser, "clerk").status_code == 302
    assert browser.get(INDEX).status_code == 200
    # Once set up, it is used.
    phone = authenticator_for(clerk)
    browser = Client()
    assert "Please enter the correct username and password" in sign_in(browser, "clerk").text
    assert sign_in(browser, "clerk", code=authenticator_code(phone)).status_code == 302


@override_settings(STAFF_2FA_REQUIRED=True)
def test_staff_2fa_required_makes_everyone_set_it_up(make_user):
    make_user("clerk")
    browser = Client()
    assert sign_in(browser, "clerk").url.startswith(reverse("admin:two_factor_setup"))
    assert browser.get(INDEX).status_code == 302


@override_settings(DEMO_SKIP_2FA=True)
def test_the_demo_signs_in_without_a_phone(make_user):
    make_user("boss", "Supervisor")
    browser = Client()
    assert sign_in(browser, "boss").status_code == 302
    assert browser.get(INDEX).status_code == 200


def test_an_idle_session_expires(make_user, time_machine):
    time_machine.move_to(MORNING)
    make_user("clerk")
    browser = Client()
    sign_in(browser, "clerk")
    time_machine.shift(timedelta(minutes=50))
    assert browser.get(INDEX).status_code == 200  # activity keeps it alive
    time_machine.shift(timedelta(minutes=50))
    assert browser.get(INDEX).status_code == 200
    time_machine.shift(timedelta(minutes=61))
    response = browser.get(INDEX)
    assert response.status_code == 302 and response.url.startswith(LOGIN)


def test_a_session_signed_in_without_the_code_cannot_replace_the_authenticator(make_user, time_machine):
    time_machine.move_to(MORNING)
    clerk = make_user("clerk")
    before = Client()
    assert sign_in(before, "clerk").status_code == 302  # no authenticator yet: the password alone
    phone = authenticator_for(clerk)  # set up since, from another session
    setup = reverse("admin:two_factor_setup")

    assert before.get(setup).url.startswith(LOGIN)  # no new secret shown
    assert before.post(setup, {"token": "123456", "password": PASSWORD}).url.startswith(LOGIN)
    assert list(TOTPDevice.objects.filter(user=clerk, confirmed=True)) == [phone]


def test_a_user_name_longer_than_any_gets_the_sign_in_page_not_an_error(make_user):
    answer = sign_in(Client(raise_request_exception=False), "A" * 300, "wrong")
    assert answer.status_code == 200
    assert "Please enter the correct username and password" in answer.text or "at most 150" in answer.text


def test_a_supervisor_without_a_phone_logs_out_from_the_setup_page(make_user):
    make_user("boss", "Supervisor")
    browser = Client()
    signed_in = sign_in(browser, "boss")
    assert signed_in.url.startswith(reverse("admin:two_factor_setup"))

    left = browser.post(reverse("admin:two_factor_sign_out"))

    assert left.url == reverse("admin:login")
    assert browser.get(signed_in.url).url.startswith(reverse("admin:login"))
    assert browser.get(reverse("admin:two_factor_sign_out")).status_code == 405
