"""The Stripe emulator for a test session, with what Stripe.js or a browser would do."""

from __future__ import annotations

from typing import Any

from gql_billing.stripe_emulator import LocalStripe

API_KEY = "sk_test_emulator"


class EmulatorError(RuntimeError):
    """A helper call got a non-2xx answer; keeps status and JSON body for assertions."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"localstripe answered {status}: {body}")
        self.status = status
        self.body = body


class StripeEmulator(LocalStripe):
    # -- emulator control ------------------------------------------------------------------

    def reset(self) -> None:
        """Drop all objects; webhook registrations survive (they are not in the store)."""
        self._call("DELETE", "/_config/data", auth=False)

    def register_webhook(
        self, id: str, url: str, secret: str, events: list[str] | None = None
    ) -> None:
        data: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            data["events"] = events
        self._call("POST", f"/_config/webhooks/{id}", json=data, auth=False)

    # -- what Stripe.js / the browser would do ---------------------------------------------

    def authenticate_payment_intent(
        self, pi_id: str, client_secret: str, success: bool = True
    ) -> dict[str, Any]:
        """Complete (or fail) a 3-D Secure challenge of a ``requires_action`` intent."""
        return self._call(
            "POST",
            f"/v1/payment_intents/{pi_id}/_authenticate",
            data={"client_secret": client_secret, "success": "true" if success else "false"},
        )

    def create_card_payment_method(self, number: str) -> str:
        pm = self._call(
            "POST",
            "/v1/payment_methods",
            data={
                "type": "card",
                "card[number]": number,
                "card[exp_month]": "12",
                "card[exp_year]": "2034",
                "card[cvc]": "123",
            },
        )
        pm_id: str = pm["id"]
        return pm_id

    def confirm_setup_intent(self, seti_id: str, pm_id: str) -> dict[str, Any]:
        """Like ``stripe.confirmCardSetup``; a 3-D Secure card is approved by a second confirm.

        Raises EmulatorError (status 402, code card_declined) for cards declined at set-up.
        The emulator does not attach the PaymentMethod to the customer on success.
        """
        path = f"/v1/setup_intents/{seti_id}/confirm"
        seti = self._call("POST", path, data={"payment_method": pm_id})
        if seti["status"] == "requires_action":
            seti = self._call("POST", path, data={})
        return seti

    def retrieve_payment_intent(self, pi_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/payment_intents/{pi_id}")

    def list_payment_intents(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "100"}
        while True:
            page = self._call("GET", "/v1/payment_intents", params=params)
            result.extend(page["data"])
            if not page["has_more"]:
                return result
            params["starting_after"] = page["data"][-1]["id"]

    def _call(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> dict[str, Any]:
        assert self._http is not None, "StripeEmulator not started"
        headers = {"Authorization": f"Bearer {API_KEY}"} if auth else {}
        response = self._http.request(method, path, headers=headers, **kwargs)
        body: dict[str, Any] = response.json() if response.content else {}
        if response.is_error:
            raise EmulatorError(response.status_code, body)
        return body
