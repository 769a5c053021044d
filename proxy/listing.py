"""GET /v1/models and GET /v1/models/{model_id}: the models a key's group may use and that
have a price, in one listing both official SDKs parse (each vendor's fields side by side, as
its dialect writes them)."""

import json

from . import errors
from .dialects import ANTHROPIC, OPENAI
from .exchange import Exchange
from .keystate import KeyState
from .prices import PriceTable

_JSON = [(b"content-type", b"application/json")]
LIST_PATH = "/v1/models"
# GET /v1/models/{model_id}: one model, as both SDKs' models.retrieve ask for it.
MODEL_PREFIX = "/v1/models/"


async def answer(exchange: Exchange, state: KeyState, prices: PriceTable) -> None:
    """The listing, or the one model its path names."""
    path = exchange.scope["path"]
    if path == LIST_PATH:
        await list_models(exchange, state, prices)
    else:
        await retrieve_model(exchange, state, prices, path[len(MODEL_PREFIX) :])


async def list_models(exchange: Exchange, state: KeyState, prices: PriceTable) -> None:
    models = await _models(state, prices)
    listing = {**OPENAI.model_list(models), **ANTHROPIC.model_list(models)}
    await exchange.respond(200, _JSON, json.dumps(listing).encode())


async def retrieve_model(
    exchange: Exchange, state: KeyState, prices: PriceTable, model_id: str
) -> None:
    """One model of the listing; a model the key cannot use is not found, whether it is
    priced for other groups or not priced at all."""
    models = await _models(state, prices)
    found = next((model for model in models if model["id"] == model_id), None)
    if found is None:
        raise errors.model_not_found(model_id, state.group_name).for_key(state.key_id)
    await exchange.respond(200, _JSON, json.dumps(found).encode())


async def _models(state: KeyState, prices: PriceTable) -> list[dict]:
    priced = await prices.priced_models() if state.group_usable else {}
    names = sorted(name for name in priced if state.allows_model(name))
    return [
        {
            **ANTHROPIC.model_object(name, priced[name]),
            **OPENAI.model_object(name, priced[name]),
        }
        for name in names
    ]
