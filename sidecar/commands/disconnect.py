"""``kc-sidecar disconnect --doctor ID``: remove a doctor's Google connection.

Exactly what the web page's Disconnect button does: push channels stopped (when the sync part
registered the hook), tokens removed and the add-on's flag set ``off`` in one committed
transaction, then the grant revoked at Google, best effort. Prints one line saying what happened.
"""

from __future__ import annotations

import argparse
import sys

from sidecar.config import Settings

EXIT_OK, EXIT_FAILED = 0, 1


def run(settings: Settings, args: argparse.Namespace) -> int:
    from sidecar.runtime import build_runtime
    from sidecar.web.connect_flow import FlowError, disconnect, user_exists

    runtime = build_runtime(settings)
    doctor_id = int(args.doctor)
    try:
        if not user_exists(runtime, doctor_id):
            print(f"kc-sidecar disconnect: there is no WordPress user {doctor_id} on this site",
                  file=sys.stderr)
            return EXIT_FAILED
        result = disconnect(runtime, doctor_id)
    except FlowError as err:
        print(f"kc-sidecar disconnect: {err.message}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        runtime.engine.dispose()
    if not result.had_token:
        print(f"doctor {doctor_id}: was not connected; connect flag set off")
    elif result.revoked:
        print(f"doctor {doctor_id}: disconnected; Google access revoked")
    else:
        print(f"doctor {doctor_id}: disconnected locally; revoking at Google failed (the grant "
              "can be removed at https://myaccount.google.com/permissions)")
    return EXIT_OK
