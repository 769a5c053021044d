"""What every app's admin tests check the same way: page names, and who is let in."""

from django.urls import reverse


def url(name: str, *args) -> str:
    return reverse(f"admin:{name}", args=args)


def assert_sent_to_login(client, pages: list[str]) -> None:
    """Every page answers a redirect to the admin's login, coming back to the page."""
    for page in pages:
        response = client.get(page)
        assert response.status_code == 302, page
        assert response["Location"] == f"{url('login')}?next={page}"
