"""Reconciliation between KiviCare and Google: outbound (rows → events) and inbound (events → rows).

Plain functions and small classes called by the scheduler, the webhook and CLI commands; no
threads of their own beyond the bounded worker pool that runs different doctors in parallel.
"""
