"""Integrations: outbound webhooks (Standard Webhooks) and the pluggable notification channels pages use.

- ``webhooks``: the Standard Webhooks primitives (secrets, signatures, the retry schedule, one HTTP attempt);
- ``service`` / ``repository`` / ``endpoints``: webhook endpoints a tenant registers, their deliveries;
- ``channels``: ``email`` (SMTP) and ``webhook`` channels and ``notify_page``, the escalation engine's entry;
- ``tasks``: the bus subscriber fanning events out, the delivery and notification jobs, the safety sweep.
"""
