"""A lead adds a webhook in a real browser, copies its secret (shown once), sends a test and
reads the delivery log; the receiver checks the signature with the secret as copied."""

import re
import threading

import pytest
from playwright.sync_api import Page, expect

from notify import delivery

# The portal's browser fixtures (a live server, Chromium, the Acme team with its lead).
from ..test_browser import acme, page, server, sign_in  # noqa: F401
from .conftest import verify

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def deliver_due() -> None:
    """notify.delivery.deliver_due, off Playwright's event loop (Django refuses queries in an
    async context, and the webhook channel runs a loop of its own)."""
    thread = threading.Thread(target=delivery.deliver_due)
    thread.start()
    thread.join(30)


def test_lead_adds_a_webhook_tests_it_and_reads_the_log(acme, page: Page, receiver):  # noqa: F811
    sign_in(page, "lead")
    page.goto("/t/acme/notifications/webhooks/")
    expect(page.get_by_role("heading", name="No webhooks yet")).to_be_visible()

    page.get_by_role("link", name="Add webhook").click()
    page.get_by_label("Payload URL").fill(receiver.url)
    expect(page.get_by_label("Every event, including types added later")).to_be_checked()
    page.get_by_role("button", name="Add webhook").click()

    expect(page.get_by_role("heading", name="Webhook added")).to_be_visible()
    secret = page.get_by_test_id("new-secret").inner_text()
    assert secret.startswith("whsec_")
    created_url = page.url
    page.get_by_role("link", name="I saved the secret").click()

    page.get_by_role("button", name="Send test").click()
    expect(page.get_by_text(re.compile(r"Test delivery [0-9a-f-]{36} queued"))).to_be_visible()
    deliver_due()
    page.reload()
    row = page.locator("tr[data-delivery]")
    expect(row.get_by_text("Delivered")).to_be_visible()
    expect(row.get_by_text(re.compile(r"HTTP 200"))).to_be_visible()
    (received,) = receiver.requests
    assert verify(secret, received)
    assert received.headers["X-HCAI-Delivery"] == row.get_attribute("data-delivery")

    page.get_by_role("link", name="Webhooks").last.click()
    expect(page.locator("tr[data-webhook-id]").get_by_text("Delivered")).to_be_visible()

    page.goto(created_url)
    expect(page.get_by_role("heading", name="This secret was shown once.")).to_be_visible()
    assert secret not in page.content()
