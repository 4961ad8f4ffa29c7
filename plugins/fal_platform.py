"""fal's services beside the queue: its Platform API (request history, prices) and its storage.

- Request history (`GET {platform}/models/requests/by-endpoint`, expand=payloads): the requests made
  to an endpoint with their inputs. A submit whose answer was lost is looked up there and adopted
  instead of paid for again (https://fal.ai/docs/platform-apis/v1/models/requests/by-endpoint).
- Prices (`GET {platform}/models/pricing`): the unit price of an endpoint; a result's
  `X-Fal-Billable-Units` times it is what the request was billed, and the plan estimates models
  the manifest leaves unpriced from it (https://fal.ai/docs/platform-apis/v1/models/pricing).
- Storage (`POST {storage}/storage/upload/initiate`, then a PUT of the bytes to the signed URL it
  answers), as fal-client uploads a local file; the file URL it gives is a valid model input.

The base URLs are `providers.fal.endpoints.platform` and `.storage`.
"""

from __future__ import annotations

import datetime
import mimetypes
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from runner.inputs import InputFile
from runner.providers import Handle, Job, ListedPrice, ProviderError, classify_status, classify_transport, json_object

if TYPE_CHECKING:
    import httpx

    from runner_plugins.fal import Fal

NAMESPACES = ("workflows", "comfy")
HISTORY_PAGES = 20  # at most 2,000 requests looked through for one lost answer
LOOKBACK_S = 120.0  # requests sent this long before the lost one are looked at too (clocks differ)
PRICED_PER_CALL = 50  # endpoint ids the pricing API takes in one call
PRICE_PAGES = 20
#: fal's pricing units in the manifests' words (a unit not here is passed on as fal says it).
UNITS = {"video": "clip", "second": "second", "image": "image", "character": "character", "request": "request"}


class FalPlatform:
    def __init__(self, fal: "Fal"):
        self.fal = fal
        self._prices: dict[str, Decimal | None] = {}

    def _base(self, name: str) -> str:
        url = self.fal.settings.endpoints.get(name)
        if not url:
            raise ProviderError(f"providers.fal.endpoints.{name} is not set: fal's {name} service cannot be reached",
                                kind="permanent", never_sent=True)
        return url.rstrip("/")

    # -- request history ----------------------------------------------------------------------------

    async def candidates(self, job: Job, since: float) -> list[Handle]:
        """Requests to the job's endpoint sent since `since` (epoch seconds) with exactly its input,
        newest first. Empty: provably none. ProviderError: the history could not be read."""
        start = datetime.datetime.fromtimestamp(since - LOOKBACK_S, datetime.timezone.utc).isoformat()
        params: dict[str, Any] = {"endpoint_id": job.endpoint, "start": start, "expand": "payloads", "limit": 100}
        found = []
        for _ in range(HISTORY_PAGES):
            page = json_object(await self.fal.http("GET", f"{self._base('platform')}/models/requests/by-endpoint", params=params))
            items = page.get("items")
            if not isinstance(items, list):
                raise ProviderError(f"fal's request history answered without items: {str(page)[:200]}", kind="retryable")
            found += [self.handle(job.endpoint, str(item["request_id"])) for item in items
                      if isinstance(item, dict) and item.get("json_input") == job.payload and item.get("request_id")]
            if not page.get("has_more") or not page.get("next_cursor"):
                return found
            params["cursor"] = page["next_cursor"]
        raise ProviderError("fal's request history is longer than this runner looks through", kind="retryable")

    def handle(self, endpoint: str, request_id: str) -> Handle:
        """The status, response and cancel URLs of a request, as the queue gives them at submit."""
        parts = endpoint.split("/")
        app = "/".join(parts[: 3 if parts[0] in NAMESPACES else 2])
        base = f"{self.fal.settings.base_url.rstrip('/')}/{app}/requests/{request_id}"
        return Handle(request_id, {"status": f"{base}/status", "response": base, "cancel": f"{base}/cancel"})

    # -- prices -------------------------------------------------------------------------------------

    async def bill(self, endpoint: str, units: str | None) -> Decimal | None:
        """What a result with `X-Fal-Billable-Units: units` cost, at the endpoint's listed unit price;
        None when either is unknown (the caller settles at the estimate)."""
        try:
            count = Decimal(units) if units is not None else None
        except InvalidOperation:
            count = None
        if count is None or not count.is_finite():
            return None
        price = await self.unit_price(endpoint)
        return None if price is None else count * price

    async def unit_price(self, endpoint: str) -> Decimal | None:
        if endpoint not in self._prices:
            try:
                listed = await self.listed([endpoint])
            except ProviderError:
                return None  # asked again for the next result
            self._prices[endpoint] = listed[endpoint].usd if endpoint in listed else None
        return self._prices[endpoint]

    async def listed(self, endpoints: Sequence[str]) -> dict[str, ListedPrice]:
        """The prices fal's price list has for these endpoints (those it leaves out are missing);
        ProviderError when the list could not be read."""
        found: dict[str, ListedPrice] = {}
        for start in range(0, len(endpoints), PRICED_PER_CALL):
            params: dict[str, Any] = {"endpoint_id": ",".join(endpoints[start:start + PRICED_PER_CALL])}
            for _ in range(PRICE_PAGES):
                answer = json_object(await self.fal.http("GET", f"{self._base('platform')}/models/pricing", params=params))
                for item in answer.get("prices") or []:
                    try:
                        usd = Decimal(str(item["unit_price"]))
                        endpoint, unit = str(item["endpoint_id"]), str(item.get("unit", ""))
                    except (TypeError, KeyError, InvalidOperation):
                        continue  # an entry this runner cannot read prices nothing
                    if usd.is_finite() and usd >= 0 and item.get("currency", "USD") == "USD":
                        found[endpoint] = ListedPrice(usd, UNITS.get(unit, unit))
                if not answer.get("has_more") or not answer.get("next_cursor"):
                    break
                params["cursor"] = answer["next_cursor"]
        return found

    # -- storage ------------------------------------------------------------------------------------

    async def upload(self, file: InputFile) -> str:
        """Store a local input file with fal; the URL of the stored file."""
        import httpx  # here: a dry run loads this module without the HTTP stack

        name = f"{file.sha256[:16]}{mimetypes.guess_extension(file.mime) or '.' + file.mime.split('/')[1]}"
        ticket = json_object(await self.fal.http("POST", f"{self._base('storage')}/storage/upload/initiate",
                                                 params={"storage_type": "gcs"}, json={"file_name": name, "content_type": file.mime}))
        try:
            upload_url, file_url = str(ticket["upload_url"]), str(ticket["file_url"])
        except KeyError:
            raise ProviderError(f"fal storage answered without an upload URL: {str(ticket)[:200]}", kind="retryable") from None
        try:  # the upload URL is signed: no fal key goes with it, as fal-client does
            response = await self.fal.client.put(upload_url, content=file.read(), headers={"Content-Type": file.mime})
        except httpx.TransportError as exc:
            raise classify_transport(exc) from None
        if response.status_code >= 300:
            raise classify_status(response, f"fal storage refused the upload: HTTP {response.status_code}")
        return file_url
