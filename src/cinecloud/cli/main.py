"""The ``cinecloud`` command."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cinecloud.config import Config, load_config

__all__ = ["app"]

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="cinecloud: video generation as a service"
)
keys_app = typer.Typer(no_args_is_help=True, help="API keys")
config_app = typer.Typer(no_args_is_help=True, help="Configuration")
app.add_typer(keys_app, name="keys")
app.add_typer(config_app, name="config")
out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file", exists=True, dir_okay=False),
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/] {message}")
    return typer.Exit(code)


def _cfg(config: Path | None, **sections: dict[str, Any]) -> Config:
    try:
        return load_config(config, **{k: v for k, v in sections.items() if v})
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(f"bad configuration: {exc}", 2) from None


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the effective configuration (secrets masked)."""
    out.print_json(json.dumps(_cfg(config).redacted()))


@app.command("edge-config")
def edge_config(
    listen: Annotated[str, typer.Option(help="address:port nginx listens on")] = "0.0.0.0:8080",
    origin: Annotated[str, typer.Option(help="host:port of `cinecloud serve`")] = "127.0.0.1:8000",
    cache_dir: Annotated[Path, typer.Option(help="proxy_cache_path")] = Path(
        "/var/cache/cinecloud"
    ),
    cache_max_size: Annotated[str, typer.Option(help="cache size cap, e.g. 50g")] = "10g",
    user: Annotated[str, typer.Option(help="user nginx's workers run as")] = "www-data",
    config: ConfigOpt = None,
) -> None:
    """Print the nginx edge config (deploy/nginx/cinecloud.conf) with this deployment's
    signing secret. Point CINECLOUD_DELIVERY__BASE_URL at the edge so URLs go through it."""
    from cinecloud.delivery.edge import EDGE_TEMPLATE, EdgeSettings, render_edge_config

    cfg = _cfg(config)
    if not EDGE_TEMPLATE.is_file():
        raise _fail(f"edge template not found: {EDGE_TEMPLATE} (run from a source checkout)")
    settings = EdgeSettings(listen, origin, cache_dir, cfg.delivery.secret, user, cache_max_size)
    try:
        typer.echo(render_edge_config(EDGE_TEMPLATE.read_text(), settings), nl=False)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    workers: Annotated[int, typer.Option(min=0, help="local workers to start beside the API")] = 0,
    autoscale: Annotated[
        str | None,
        typer.Option(
            help="run the autoscaler with this launcher: local (worker processes here) "
            "or observe (publish the desired count only); see docs/autoscaling.md"
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the control plane (API, worker API, origin, metrics)."""
    from cinecloud.cli.serve import run_server

    server: dict[str, Any] = {}
    if host:
        server["host"] = host
    if port is not None:
        server["port"] = port
    scaling: dict[str, Any] = {}
    if autoscale is not None:
        if autoscale not in ("local", "observe"):
            raise _fail(f"--autoscale must be local or observe (got {autoscale!r})", 2)
        scaling = {"enabled": True, "launcher": autoscale}
    run_server(_cfg(config, server=server, autoscale=scaling), workers)


@app.command()
def worker(
    server: Annotated[str | None, typer.Option(help="control plane URL")] = None,
    token: Annotated[str | None, typer.Option(help="worker token")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="model(s) to load")] = None,
    name: Annotated[str | None, typer.Option(help="worker name")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run a worker that leases jobs from the control plane."""
    from cinecloud.workers import run_worker

    w: dict[str, Any] = {}
    if server:
        w["server_url"] = server
    if token:
        w["token"] = token
    if model:
        w["models"] = model
    if name:
        w["name"] = name
    raise typer.Exit(run_worker(_cfg(config, worker=w)))


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="tenant name (created if new)")],
    admin: Annotated[bool, typer.Option(help="an admin key")] = False,
    name: Annotated[str, typer.Option(help="a label for the key")] = "",
    config: ConfigOpt = None,
) -> None:
    """Create an API key for a tenant; the key is printed once."""
    accounts = _accounts(_cfg(config))
    t = accounts.ensure_tenant(tenant)
    key, rec = accounts.create_key(t.id, admin=admin, name=name)
    err.print(f"created {rec.id} for tenant '{tenant}' ({t.id})")
    typer.echo(key)


@keys_app.command("list")
def keys_list(config: ConfigOpt = None) -> None:
    """List API keys (prefixes only)."""
    table = Table("id", "tenant", "prefix", "name", "admin")
    for rec, tenant_name in _accounts(_cfg(config)).list_keys():
        table.add_row(
            rec.id, tenant_name, rec.prefix + "…", rec.name, "yes" if rec.is_admin else ""
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, config: ConfigOpt = None) -> None:
    """Revoke an API key by id."""
    if not _accounts(_cfg(config)).revoke_key(key_id):
        raise _fail(f"no active key '{key_id}'")
    err.print(f"revoked {key_id}")


def _accounts(cfg: Config) -> Any:
    import time

    from cinecloud.jobs import AccountStore, make_engine, migrate

    engine = make_engine(cfg.db.url)
    migrate(engine)
    return AccountStore(engine, clock=time.time)


@app.command()
def models(config: ConfigOpt = None) -> None:
    """List the registered models and whether their weights are installed."""
    from cinecloud.engine.registry import default_registry

    reg = default_registry(_cfg(config).engine)
    table = Table("id", "family", "installed", "default size", "frames", "steps", "source")
    for s in reg.list():
        d = s.defaults
        mark = "yes" if s.source.is_dir() else f"no: {s.build_command}"
        name = s.id + (" (default)" if s.id == reg.default_id else "")
        table.add_row(
            name,
            s.family,
            mark,
            f"{d.width}x{d.height}",
            str(d.num_frames),
            str(d.steps),
            str(s.source),
        )
    out.print(table)


@app.command("fit-alpha")
def fit_alpha_cmd(
    family: Annotated[str, typer.Argument(help="model family, e.g. wan-t2v")],
    timings: Annotated[
        list[str], typer.Argument(help="RANKS=SECONDS timings of one video, e.g. 1=60 2=33 4=19")
    ],
    source: Annotated[
        str, typer.Option(help="where the timings come from (stored with alpha)")
    ] = "measured",
    table: Annotated[
        Path | None, typer.Option(help="service-time table (default: the shipped alpha.json)")
    ] = None,
    write: Annotated[bool, typer.Option(help="store the fitted alpha in the table")] = False,
) -> None:
    """Fit the speed-up parameter alpha of S(N) = N / (1 + alpha (N - 1)) from timings."""
    from cinecloud.scheduler import AlphaFitError, fit_alpha, parse_measurement, speedup
    from cinecloud.scheduler.service import DEFAULT_TABLE, with_alpha

    try:
        alpha = fit_alpha([parse_measurement(t) for t in timings])
    except AlphaFitError as exc:
        raise _fail(str(exc), 2) from None
    widths = ", ".join(f"S({n}) = {speedup(n, alpha):.2f}" for n in (2, 4, 8))
    out.print(f"{family}: alpha = {alpha:.4f} ({widths})")
    if write:
        path = table or DEFAULT_TABLE
        data = json.loads(path.read_text(encoding="utf-8"))
        updated = with_alpha(data, family, round(alpha, 4), source)
        path.write_text(json.dumps(updated, indent=2) + "\n", encoding="utf-8")
        out.print(f"stored in {path}")


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="a video (MP4) or an HLS init segment")],
    trust_anchors: Annotated[
        Path | None, typer.Option(help="PEM file of more trusted C2PA root certificates")
    ] = None,
    require_trust: Annotated[
        bool, typer.Option(help="fail unless the C2PA signer is trusted, not just valid")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    config: ConfigOpt = None,
) -> None:
    """Check a video's provenance: its C2PA manifest, AIGC label and watermark.
    Exits 1 when it has no valid provenance, 2 when the file cannot be read."""
    from cinecloud.cli.verify import print_report
    from cinecloud.cli.verify import trust_anchors as anchors_for
    from cinecloud.render.verify import inspect_file, report_dict

    cfg = _cfg(config)
    try:
        report = inspect_file(file, anchors_for(cfg, trust_anchors))
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    data = report_dict(report, require_trust=require_trust)
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print_report(out, data)
    if not data["valid"]:
        raise typer.Exit(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="what the video shows")],
    output: Annotated[Path, typer.Option("-o", "--output", help="where to write the MP4")] = Path(
        "out.mp4"
    ),
    server: Annotated[str | None, typer.Option(help="control plane URL")] = None,
    local: Annotated[
        bool, typer.Option(help="run an embedded server and worker for this one job")
    ] = False,
    api_key: Annotated[str | None, typer.Option(envvar="CINECLOUD_API_KEY", help="API key")] = None,
    model: Annotated[str | None, typer.Option(help="model id")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT")] = None,
    seconds: Annotated[int | None, typer.Option(help="duration")] = None,
    num_frames: Annotated[int | None, typer.Option(help="frame count")] = None,
    steps: Annotated[int | None, typer.Option(help="denoising steps")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    guidance_scale: Annotated[float | None, typer.Option(help="classifier-free guidance")] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="what to avoid")] = None,
    config: ConfigOpt = None,
) -> None:
    """Generate one video and write it to a file."""
    from cinecloud.cli.generate import GenerateError
    from cinecloud.cli.generate import generate as run

    body = {
        k: v
        for k, v in dict(
            prompt=prompt,
            model=model,
            size=size,
            seconds=seconds,
            num_frames=num_frames,
            steps=steps,
            seed=seed,
            guidance_scale=guidance_scale,
            negative_prompt=negative_prompt,
        ).items()
        if v is not None
    }
    if local and server:
        raise _fail("use either --server or --local", 2)
    stop = None
    if local:
        cfg, stop = _start_local(config)
        url = cfg.server.public_url
    else:
        cfg = _cfg(config)
        url = server or cfg.worker.server_url
    key = api_key or _saved_key(cfg)
    if not key:
        raise _fail("no API key: pass --api-key or set CINECLOUD_API_KEY", 2)
    try:
        video = run(url, key, body, output)
    except GenerateError as exc:
        raise _fail(str(exc)) from None
    finally:
        if stop is not None:
            stop()
    err.print(
        f"[green]done[/] {video['id']} in {video['timings']['total']:.2f}s -> {output}",
        soft_wrap=True,
    )
    typer.echo(video["outputs"]["video"])


def _ops_client(server: str | None, api_key: str | None, config: Path | None) -> Any:
    """An HTTP client for the server (``--server`` or the configured one) with the key
    (``--api-key``, ``CINECLOUD_API_KEY`` or the saved admin key)."""
    import httpx

    cfg = _cfg(config)
    key = api_key or _saved_key(cfg)
    if not key:
        raise _fail("no API key: pass --api-key or set CINECLOUD_API_KEY (an admin key)", 2)
    url = server or cfg.worker.server_url
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10)


ServerOpt = Annotated[str | None, typer.Option(help="control plane URL")]
KeyOpt = Annotated[str | None, typer.Option(envvar="CINECLOUD_API_KEY", help="an admin API key")]


@app.command()
def status(server: ServerOpt = None, api_key: KeyOpt = None, config: ConfigOpt = None) -> None:
    """Server health, the queue by model and priority, and the workers."""
    from cinecloud.cli.ops import OpsError, fetch_snapshot, render_snapshot

    with _ops_client(server, api_key, config) as client:
        try:
            out.print(render_snapshot(fetch_snapshot(client)))
        except OpsError as exc:
            raise _fail(str(exc)) from None


@app.command()
def top(
    server: ServerOpt = None,
    api_key: KeyOpt = None,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between refreshes")] = 1.0,
    once: Annotated[bool, typer.Option(help="draw one screen and exit")] = False,
    config: ConfigOpt = None,
) -> None:
    """A live view of the queue and the workers (Ctrl-C to leave)."""
    from cinecloud.cli.ops import OpsError, run_top

    with _ops_client(server, api_key, config) as client:
        try:
            run_top(client, out, interval_s=interval, once=once)
        except OpsError as exc:
            raise _fail(str(exc)) from None
        except KeyboardInterrupt:
            pass


def _saved_key(cfg: Config) -> str | None:
    path = cfg.server.home / "admin-key"
    return path.read_text().strip() if path.is_file() else None


def _start_local(config: Path | None) -> tuple[Config, Any]:
    import time

    import httpx

    from cinecloud.cli.serve import start_server_thread
    from cinecloud.workers.launcher import LocalLauncher

    port = _free_port()
    cfg = _cfg(config, server={"port": port}, worker={"server_url": f"http://127.0.0.1:{port}"})
    server, thread, _ = start_server_thread(cfg)
    launcher = LocalLauncher(cfg, 1)
    launcher.start()
    for _ in range(100):
        try:
            httpx.get(f"{cfg.server.public_url}/healthz", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)

    def stop() -> None:
        launcher.stop(timeout=10)
        server.should_exit = True
        thread.join(timeout=10)

    return cfg, stop


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app(prog_name="cinecloud")


if __name__ == "__main__":
    main()
