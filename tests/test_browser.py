"""End to end in a real browser: Debian's Chromium driven by Playwright against the whole app
(portal and relay, hcai.asgi.application) served by uvicorn on a real socket.

A lead signs in, creates a key and reads it and the base URL from the page as a user would,
calls the relay with the official anthropic SDK, disables the key on the edit page (refused),
enables it again, sets a quota, an expiry and budgets, and checks the key list. A lead limits a
member's key, which the member cannot undo. Staff rotate keys in bulk in the admin and read the
new secrets once; a reload shows they are gone and rotates nothing. On failure the edit page is
saved as a screenshot in test-artifacts/.
"""

import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import anthropic
import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect, sync_playwright

from billing.models import ModelPrice
from keys.models import Group, Membership
from proxy.services import channel_upsert

from .factories import GroupFactory, MembershipFactory, TeamFactory, UserFactory, make_key
from .refusal_counts import refusal_rows

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
# Debian's browser, never a download; no sandbox and no GPU in containers, and none of the
# background traffic (updates, field trials) a test has no business making.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
MODEL = "claude-sonnet-4-6"
PASSWORD = "pw-for-tests-1"
# Expect's wait for anything the page must show; the pages are server-rendered and quick.
TIMEOUT_MS = 10_000


@pytest.fixture
def server(relay_server, transactional_db, settings) -> str:
    """The run's live server (portal and relay): what the portal changes, the relay sees."""
    url, relay = relay_server
    # The portal prints this as ANTHROPIC_BASE_URL; the test reads it back from the page.
    settings.PUBLIC_BASE_URL = url
    relay.prices.forget()
    return url


@pytest.fixture
def acme(transactional_db):
    """A team with a lead, and a group routed to the relay's local mock channel."""
    team = TeamFactory(name="Acme", slug="acme")
    MembershipFactory(team=team, role=Membership.Role.LEAD, user__username="lead")
    group = GroupFactory(name="CC Official Channel", models=["claude-*"])
    channel_upsert(name="mock", provider="mock", groups=[group])
    ModelPrice.objects.create(
        model=MODEL, input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15")
    )
    return team


@pytest.fixture
def page(server) -> Iterator[Page]:
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/install-packages should have installed it.")
        pytest.skip(f"{CHROMIUM} is missing: run .ci/install-packages (apt-get install chromium).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def ask(key: str, base_url: str) -> anthropic.types.Message:
    client = anthropic.Anthropic(auth_token=key, base_url=base_url, max_retries=0, timeout=30)
    return client.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]
    )


def update(page: Page) -> None:
    page.get_by_role("button", name="Update").click()
    expect(page.get_by_text("Saved. Changes take effect immediately.")).to_be_visible()
    expect(
        page.get_by_text("If your tool caches its configuration, restart the tool.")
    ).to_be_visible()


def open_key_list(page: Page) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Keys").click()
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()


def key_row(page: Page, name: str):
    return page.locator("tr", has=page.get_by_role("link", name=name, exact=True))


def test_lead_creates_uses_disables_and_restricts_a_key(acme, page):
    edit_url: str | None = None
    try:
        # Sign in.
        page.goto("/")
        page.get_by_label("Username").fill("lead")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(re.compile(r"/t/acme/keys/$"))
        expect(page.get_by_role("heading", name="API keys")).to_be_visible()

        # Create a key; read it and the base URL from the page, as a user copies them.
        page.get_by_role("link", name="Create key").first.click()
        page.get_by_label("Name").fill("claude-code-main")
        page.get_by_label("Group").select_option(label="CC Official Channel · ×1 · claude-*")
        page.get_by_role("button", name="Create key").click()
        expect(page.get_by_role("heading", name="Key created")).to_be_visible()
        expect(page.get_by_text("It will not be shown again.")).to_be_visible()
        key = page.get_by_test_id("new-key").inner_text().strip()
        assert key.startswith("sk-hc-")
        setup = page.locator("#setup-sh").inner_text()
        assert f'export ANTHROPIC_AUTH_TOKEN="{key}"' in setup
        base_url = re.search(r'export ANTHROPIC_BASE_URL="([^"]+)"', setup).group(1)
        assert (
            f'$env:ANTHROPIC_AUTH_TOKEN="{key}"' in page.locator("#setup-powershell").inner_text()
        )

        # The key works through the relay.
        answer = ask(key, base_url)
        assert answer.content[0].text.startswith("Hello from the HCAI Keys mock channel")

        # A reload (F5) shows that the secret was shown once, and creates no second key.
        page.reload()
        expect(page.get_by_role("heading", name="This secret was shown once.")).to_be_visible()
        expect(page.get_by_test_id("new-key")).to_have_count(0)
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Keys").click()
        expect(page.locator("tr[data-key-id]")).to_have_count(1)

        # Disable it on the edit page: the relay refuses it at once.
        key_row(page, "claude-code-main").get_by_role("link", name="Edit").click()
        edit_url = page.url
        expect(page.get_by_role("heading", name="Basic Information")).to_be_visible()
        page.get_by_label("Disabled").check()
        update(page)
        with pytest.raises(anthropic.PermissionDeniedError) as refused:
            ask(key, base_url)
        assert refused.value.status_code == 403
        assert "This key is disabled." in refused.value.message

        open_key_list(page)
        expect(key_row(page, "claude-code-main").locator(".badge")).to_have_text("Disabled")

        # Enable it again, with a quota and an expiry.
        page.goto(edit_url)
        page.get_by_label("Enabled").check()
        update(page)
        tomorrow = timezone.localtime() + timedelta(days=1)
        expiry = tomorrow.replace(hour=12, minute=0, second=0, microsecond=0)
        page.get_by_label("Quota limit (USD)").fill("5")
        page.get_by_label("Key expiration").fill(expiry.strftime("%Y-%m-%dT%H:%M"))
        update(page)
        expect(page.get_by_label("Quota limit (USD)")).to_have_value("5.00")

        # A daily budget and a concurrency limit, under Budgets.
        expect(page.get_by_role("heading", name="Budgets")).to_be_visible()
        page.get_by_label("Daily limit (USD)").fill("2")
        page.get_by_label("Max concurrent requests").fill("4")
        update(page)
        expect(page.get_by_label("Daily limit (USD)")).to_have_value("2.00")
        expect(page.get_by_label("Max concurrent requests")).to_have_value("4")
        expect(page.get_by_label("Weekly limit (USD)")).to_have_value("")
        answer = ask(key, base_url)
        assert answer.content[0].text.startswith("Hello from the HCAI Keys mock channel")

        # A bad entry is refused next to its field, with the input kept.
        page.get_by_label("Rate limit").fill("sixty a minute")
        page.get_by_role("button", name="Update").click()
        expect(page.locator("#id_rate_limit_error")).to_contain_text("Enter a rate limit like 60/m")
        expect(page.get_by_label("Rate limit")).to_have_value("sixty a minute")
        page.get_by_label("Rate limit").fill("")
        page.get_by_label("Weekly limit (USD)").fill("-1")
        page.get_by_role("button", name="Update").click()
        expect(page.locator("#id_weekly_limit_usd_error")).to_have_text(
            "Weekly limit cannot be negative. Use 0 for no weekly limit."
        )
        expect(page.get_by_label("Weekly limit (USD)")).to_have_value("-1")
        expect(page.get_by_label("Daily limit (USD)")).to_have_value("2.00")

        # The list shows the key enabled, its spend against its tightest limit (the $2 daily
        # limit, with less left than the $5 quota) and its expiry.
        open_key_list(page)
        row = key_row(page, "claude-code-main")
        expect(row.locator(".badge")).to_have_text("Enabled")
        expect(row.locator(".spend__text")).to_contain_text("of $2.00")
        expect(row.locator("td[data-label=Expires]")).to_have_text(
            expiry.strftime("%Y-%m-%d %H:%M %Z")
        )
        expect(row.locator("td[data-label='Rate limit']")).to_have_text("none")
    except BaseException:
        _save_screenshots(page, edit_url)
        raise


def sign_in(page: Page, username: str) -> None:
    """Sign in as `username`, after signing out whoever was signed in."""
    page.context.clear_cookies()
    page.goto("/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()


@pytest.fixture
def lead_id(acme) -> int:
    """The lead's id, and a member of Acme; read before the browser starts (Playwright's loop
    makes the test body an async context, where Django refuses database queries)."""
    MembershipFactory(team=acme, user__username="member")
    return acme.memberships.get(role=Membership.Role.LEAD).user_id


def test_a_lead_limits_a_members_key_and_the_member_cannot_undo_it(acme, lead_id, page):
    """Issue #15's "who may do what": the lead creates a key for a member with a quota, the
    member sees it read-only, the lead disables the key, the member cannot enable it, and the
    relay refuses it, and the lead sees the refusal on the key's page."""
    edit_url: str | None = None
    try:
        sign_in(page, "lead")
        page.get_by_role("link", name="Create key").first.click()
        expect(page.get_by_label("Owner")).to_have_value(str(lead_id))
        page.get_by_label("Owner").select_option(label="member")
        page.get_by_label("Name").fill("for-member")
        page.get_by_label("Group").select_option(label="CC Official Channel · ×1 · claude-*")
        page.get_by_label("Quota limit (USD)").fill("1")
        page.get_by_label("Daily limit (USD)").fill("0.50")
        page.get_by_role("button", name="Create key").click()
        expect(page.get_by_role("heading", name="Key created")).to_be_visible()
        key = page.get_by_test_id("new-key").inner_text().strip()
        base_url = re.search(
            r'export ANTHROPIC_BASE_URL="([^"]+)"', page.locator("#setup-sh").inner_text()
        ).group(1)
        assert ask(key, base_url).content[0].text.startswith("Hello from the HCAI Keys mock")

        # The member sees the key among theirs; the quota the lead set is read-only.
        sign_in(page, "member")
        row = key_row(page, "for-member")
        expect(row).to_be_visible()
        row.get_by_role("link", name="Edit").click()
        edit_url = page.url
        quota = page.get_by_label("Quota limit (USD)")
        expect(quota).to_have_value("1.00")
        expect(quota).to_be_disabled()
        daily = page.get_by_label("Daily limit (USD)")
        expect(daily).to_have_value("0.50")
        expect(daily).to_be_disabled()
        expect(
            page.get_by_text("Set by your team lead. Only a lead can loosen or clear it.")
        ).to_have_count(2)
        expect(page.get_by_label("Group")).to_be_disabled()

        # The lead disables it "for a risk check".
        sign_in(page, "lead")
        page.goto(edit_url)
        page.get_by_label("Disabled").check()
        update(page)

        # The member cannot enable it again, and the relay refuses the key.
        sign_in(page, "member")
        page.goto(edit_url)
        expect(
            page.get_by_text("Disabled by your team lead. Only a lead can enable it.")
        ).to_be_visible()
        expect(page.get_by_label("Enabled")).to_be_disabled()
        expect(page.get_by_label("Disabled")).to_be_checked()
        with pytest.raises(anthropic.PermissionDeniedError) as refused:
            ask(key, base_url)
        assert refused.value.status_code == 403
        assert "This key is disabled." in refused.value.message

        # The lead sees why the member's tool fails: the refusal is on the key's page.
        # (Off Playwright's event loop: the ORM refuses to run on one.)
        with ThreadPoolExecutor(1) as pool:
            pool.submit(refusal_rows, count=1, key__name="for-member").result()
        sign_in(page, "lead")
        page.goto(edit_url.removesuffix("edit/"))
        expect(page.get_by_text("Refused: Key disabled")).to_be_visible()
        expect(page.locator("tr.requests__refusal")).to_contain_text("403")
    except BaseException:
        _save_screenshots(page, edit_url)
        raise


@pytest.fixture
def old_secrets(acme) -> dict[str, str]:
    """Two keys of the lead's (name: plaintext) and a superuser to rotate them, made before the
    browser starts (see lead_id)."""
    UserFactory(username="staff", is_staff=True, is_superuser=True)
    lead = acme.memberships.get(role=Membership.Role.LEAD).user
    group = Group.objects.get(name="CC Official Channel")
    return {
        name: make_key(team=acme, owner=lead, group=group, name=name).plaintext
        for name in ("laptop", "ci-runner")
    }


def test_staff_rotate_keys_in_the_admin_and_read_each_new_secret_once(server, old_secrets, page):
    """Issue #15's "after create and rotate", in the admin: the POST redirects to a page that
    shows the new secrets once; a reload (F5) shows they are gone and rotates nothing."""
    try:
        page.goto("/admin/")
        page.get_by_label("Username").fill("staff")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.goto("/admin/keys/apikey/")
        for name in old_secrets:
            page.get_by_role(
                "checkbox", name=re.compile(f"^Select this object for an action - {name} ")
            ).check()
        page.get_by_role("combobox", name="Action").select_option("rotate_keys")
        page.get_by_role("button", name="Go").click()
        expect(page.get_by_text("Rotate these keys?")).to_be_visible()
        page.get_by_role("button", name="Yes, rotate").click()

        expect(page).to_have_url(re.compile(r"/admin/keys/apikey/issued/[\w-]+/$"))
        expect(page.get_by_text("Copy these keys now.")).to_be_visible()
        new_secrets = {}
        for name in old_secrets:
            row = page.locator("tr", has=page.get_by_role("link", name=name, exact=True))
            new_secrets[name] = row.locator("code.issued-key").inner_text().strip()
        assert set(new_secrets.values()).isdisjoint(old_secrets.values())
        for name, secret in new_secrets.items():
            assert secret.startswith("sk-hc-"), name
            assert ask(secret, server).content[0].text.startswith("Hello from the HCAI Keys")
        with pytest.raises(anthropic.AuthenticationError):
            ask(old_secrets["laptop"], server)

        page.reload()
        expect(page.get_by_role("heading", name="This secret was shown once.")).to_be_visible()
        expect(page.locator("code.issued-key")).to_have_count(0)
        # Nothing was rotated again: the secrets read on the first visit still work.
        for secret in new_secrets.values():
            assert ask(secret, server).content[0].text.startswith("Hello from the HCAI Keys")
    except BaseException:
        _save_screenshots(page, None)
        raise


def test_a_lead_caps_a_members_monthly_spend_on_the_team_page(acme, lead_id, page):
    """Issue #16's member cap: the lead types a bad cap (kept, with the error), then a good one
    on the team page; the member sees the team's budget and their own cap, read-only."""
    try:
        sign_in(page, "lead")
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Team").click()
        expect(page.get_by_text("No monthly budget · $0.00 spent this month")).to_be_visible()
        row = page.locator("tr", has=page.get_by_role("rowheader", name="member", exact=True))
        cap = row.get_by_label("Monthly cap of member (USD)")
        cap.fill("twenty")
        row.get_by_role("button", name="Set cap").click()
        row = page.locator("tr", has=page.get_by_role("rowheader", name="member", exact=True))
        expect(row.get_by_role("alert")).to_have_text(
            "Enter a monthly cap in US dollars with at most 2 decimal places (whole cents), "
            "e.g. 25 or 25.50, up to 9,999,999,999.99; 0 means no cap."
        )
        cap = row.get_by_label("Monthly cap of member (USD)")
        expect(cap).to_have_value("twenty")
        cap.fill("20")
        row.get_by_role("button", name="Set cap").click()
        expect(page.get_by_text("member's monthly cap is now $20.00.")).to_be_visible()
        row = page.locator("tr", has=page.get_by_role("rowheader", name="member", exact=True))
        expect(row.get_by_text("$0.00 of $20.00 this month")).to_be_visible()
        expect(row.get_by_label("Monthly cap of member (USD)")).to_have_value("20")

        sign_in(page, "member")
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Team").click()
        expect(page.get_by_role("heading", name="Your monthly cap")).to_be_visible()
        expect(page.get_by_text("$0.00 of $20.00 this month")).to_be_visible()
        expect(page.get_by_role("button", name="Set cap")).to_have_count(0)
    except BaseException:
        _save_screenshots(page, None)
        raise


def _save_screenshots(page: Page, edit_url: str | None) -> None:
    """Keep what the browser showed when the test failed, then the edit page, for CI to keep."""
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page.screenshot(path=str(ARTIFACTS / "browser-failure.png"), full_page=True)
        if edit_url:
            page.goto(edit_url)
            page.screenshot(path=str(ARTIFACTS / "edit-page.png"), full_page=True)
    except Exception as error:  # The original failure matters more than a missing picture.
        print(f"Could not save a screenshot: {error}")


@pytest.fixture
def leads_key(acme) -> int:
    """A key of Acme's lead, made before the browser starts (see lead_id)."""
    lead = acme.memberships.get(role=Membership.Role.LEAD).user
    group = Group.objects.get(name="CC Official Channel")
    return make_key(team=acme, owner=lead, group=group, actor=lead, name="cc-main").key.pk


def test_the_portal_in_chinese(acme, leads_key, page):
    """One pass in Simplified Chinese: sign in, switch to 中文, edit a key, see a translated
    form error, save with 更新."""
    page.goto("/")
    page.get_by_label("Username").fill("lead")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()

    page.get_by_role("button", name="中文").click()
    expect(page.get_by_role("heading", name="API 密钥")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(page.get_by_role("button", name="退出登录")).to_be_visible()

    page.get_by_role("navigation", name="主导航").get_by_role("link", name="密钥").click()
    key_row(page, "cc-main").get_by_role("link", name="编辑 cc-main").click()
    expect(page.get_by_role("heading", name="密钥设置")).to_be_visible()
    for section in ("基本信息", "限制", "预算"):
        expect(page.get_by_role("heading", name=section, exact=True)).to_be_visible()

    page.get_by_label("速率限制", exact=True).fill("fast")
    page.get_by_role("button", name="更新").click()
    expect(page.get_by_text("请修正下方标出的字段。未保存任何内容。")).to_be_visible()
    expect(page.get_by_text("请按 60/m 的格式输入速率限制")).to_be_visible()

    page.get_by_label("速率限制", exact=True).fill("60/m")
    page.get_by_role("button", name="更新").click()
    expect(page.get_by_text("已保存。更改立即生效。")).to_be_visible()
    expect(
        page.get_by_role("status").get_by_text("如果你的工具会缓存配置，请重启工具。")
    ).to_be_visible()

    # The choice is the account's: the next sign-in, in a browser asking for English, is in
    # Chinese too.
    page.context.clear_cookies()
    page.goto("/", wait_until="load")
    page.get_by_label("Username").fill("lead")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="API 密钥")).to_be_visible()
    page.goto(f"/t/acme/keys/{leads_key}/")
    expect(page.locator("dl.summary")).to_contain_text("60/m")
