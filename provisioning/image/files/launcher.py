"""Start tenant_app as soon as its settings exist, with its modules already imported.

In a prebooted template this process is saved mid-wait, so a clone starts serving without
paying Python's import time under TCG.
"""

import os
import sys
import time

SETTINGS = "/etc/tenant-app.env"

import tenant_app.__main__ as entry  # noqa: E402  (imported before the wait on purpose)
import tenant_app.app  # noqa: E402, F401  (the heavy part: FastAPI, SQLAlchemy, the routes)

# The template builder saves the guest once this marker exists: imports done, settings awaited.
os.makedirs("/run/countycloud", exist_ok=True)
with open("/run/countycloud/launcher-waiting", "w") as marker:
    marker.write(str(os.getpid()))

while not os.path.exists(SETTINGS):
    time.sleep(0.05)

os.environ["TENANT_APP_SETTINGS_FILE"] = SETTINGS
sys.argv = ["tenant-app", "serve"]
entry.main()
