"""Starting the MONAI Label server over our app."""

from __future__ import annotations

import sys
from pathlib import Path

from monailabel.main import Main

from app.main import app_dir

GIL_SWITCH_INTERVAL_S = 0.001


def start_server(
    studies: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    conf: list[tuple[str, str]] | None = None,
    extra_args: list[str] | None = None,
) -> None:
    """Run ``monailabel start_server`` in this process with our app folder; blocks until the server stops."""
    # A request thread that waits on the database gives up the GIL at each round trip and then waits up to the switch
    # interval to get it back from a CPU-bound thread (a label validation, a segmentation): 5 ms by default, paid at
    # every round trip of a claim. 1 ms keeps Next Sample quick next to such work (docs/design.md, "Faults, load and
    # replicas").
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    argv = ["start_server", "--app", str(app_dir()), "--studies", str(studies), "--host", host, "--port", str(port)]
    for key, value in conf or []:
        argv += ["--conf", key, value]
    extra = list(extra_args or [])
    if "--uvicorn_app" not in extra:
        extra += ["--uvicorn_app", "app.api.asgi:app"]
    argv += extra
    main = Main(actions=("start_server",))
    args = main.args_parser("slpt serve").parse_args(argv)
    main.action_start_server(args)
