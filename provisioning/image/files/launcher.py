"""Start tenant_app as soon as its settings exist, with everything its `serve` needs already imported.

In a prebooted template this process is saved mid-wait, so a clone starts serving without paying
Python's import time under TCG (seconds).
"""

import os
import sys
import time

SETTINGS = "/etc/tenant-app.env"

# Imported before the wait on purpose: the app, its migrations and the server.
import alembic.command  # noqa: E402, F401
import uvicorn  # noqa: E402
import uvicorn.lifespan.on  # noqa: E402
import uvicorn.loops.auto  # noqa: E402
import uvicorn.protocols.http.auto  # noqa: E402, F401

import tenant_app.__main__ as entry  # noqa: E402
import tenant_app.app  # noqa: E402
import tenant_app.migrations  # noqa: E402, F401

# The template builder saves the guest once this marker exists: imports done, settings awaited.
os.makedirs("/run/countycloud", exist_ok=True)
with open("/run/countycloud/launcher-waiting", "w") as marker:
    marker.write(str(os.getpid()))

while not os.path.exists(SETTINGS):
    time.sleep(0.02)

os.environ["TENANT_APP_SETTINGS_FILE"] = SETTINGS
sys.argv = ["tenant-app", "serve"]
entry.main()
