"""A Python client of the billing gateway, with the `gql` package.

    pip install 'gql[httpx]'
    GQL_BILLING_URL=http://127.0.0.1:8000/graphql GQL_BILLING_TOKEN=gqlb_... \
        python examples/python_client.py [--topup-aud-cents 50000]

Prints the wallet and the last transactions; with --topup-aud-cents, tops up first (with an
idempotency key, so running it twice after a network error never charges twice).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid

from gql import Client, gql
from gql.transport.httpx import HTTPXTransport

WALLET = gql(
    """
    query Wallet {
      wallet {
        balanceCredits availableCredits
        balance { formatted }
      }
      transactions(first: 5) {
        edges { node { kind amountCredits balanceAfterCredits description } }
      }
    }
    """
)

TOPUP = gql(
    """
    mutation Topup($input: TopupInput!) {
      topup(input: $input) {
        __typename
        ... on TopupSuccess { creditsGranted bonusCredits newBalance }
        ... on AuthenticationRequired { clientSecret paymentIntentId }
        ... on Problem { title detail }
      }
    }
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topup-aud-cents", type=int)
    parser.add_argument("--idempotency-key", default=None)
    args = parser.parse_args()
    token = os.environ.get("GQL_BILLING_TOKEN")
    if not token:
        print(
            "usage: GQL_BILLING_URL=http://127.0.0.1:8000/graphql GQL_BILLING_TOKEN=gqlb_... "
            "python examples/python_client.py [--topup-aud-cents N]\n"
            "error: GQL_BILLING_TOKEN is not set (`make demo` prints a token)",
            file=sys.stderr,
        )
        sys.exit(2)
    transport = HTTPXTransport(
        url=os.environ.get("GQL_BILLING_URL", "http://127.0.0.1:8000/graphql"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    with Client(transport=transport) as session:
        if args.topup_aud_cents:
            # Keep the key with the order: a retry with the same key is safe.
            key = args.idempotency_key or str(uuid.uuid4())
            variables = {"input": {"audCents": args.topup_aud_cents, "idempotencyKey": key}}
            result = session.execute(TOPUP, variable_values=variables)
            print(json.dumps({"topup": result["topup"]}))
        print(json.dumps(session.execute(WALLET)))


if __name__ == "__main__":
    main()
