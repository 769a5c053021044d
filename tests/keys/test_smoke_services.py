from keys.models import ApiKey, KeyEvent


def test_create_returns_plaintext_once_and_stores_digest(issued):
    key = ApiKey.objects.get(pk=issued.key.pk)
    assert issued.plaintext.startswith("sk-hc-")
    assert key.digest != issued.plaintext
    assert issued.plaintext.startswith(key.prefix)
    assert KeyEvent.objects.filter(key=key, action="created").count() == 1
