"""Customer webhooks: the organization's own systems hear about its billing.

- `outbox.py`     events recorded in the transaction of the change they report
- `endpoints.py`  the organization's receivers: create, change, rotate, delete, list
- `urls.py`       which URLs a receiver may have (public https in production)
- `delivery.py`   the worker's side: claim, sign (Standard Webhooks), send, back off
- `alerts.py`     the low-balance floor, checked with every ledger movement
"""
