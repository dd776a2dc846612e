"""``kseg submit IMAGE...``, ``kseg fetch JOB_ID...`` and ``kseg jobs``: use a running kseg
service from the command line: upload, watch the progress, download the result images, list
your jobs.

Both write what ``kseg segment`` writes (``<name>.png`` per output and ``result.json``) into
``./<image stem>-kseg/``, so the service and the local core are interchangeable in scripts.

Exit codes: 0 every job succeeded (or, with ``--no-wait``, was accepted); 1 a job failed or
was canceled, or the service refused an image; 2 a usage error (bad option or parameter,
missing file); 3 the service could not be used (not reachable, token refused, server error,
or ``--timeout`` passed); 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from kseg.shared.cli.segment import (
    add_outdir_argument,
    add_param_arguments,
    params_from_args,
    print_quietly_on_broken_pipe,
    summary,
    usage_error,
    write_result,
)
from kseg.shared.cli.tables import format_table
from kseg.shared.client import ApiError, Client, ClientError, WaitTimeout
from kseg.shared.errors import InvalidParameterError
from kseg.shared.settings import get_settings
from kseg.shared.statuses import FINAL_STATUSES

EXIT_OK, EXIT_JOB, EXIT_USAGE, EXIT_SERVICE = 0, 1, 2, 3
#: Ctrl-C, as shells report a SIGINT.
EXIT_INTERRUPTED = 130

_EXIT_CODES = """\
exit codes: 0 every job succeeded (with --no-wait: was accepted); 1 a job failed or was
canceled, or the service refused an image; 2 a usage error; 3 the service could not be used
(not reachable, token refused, server error, --timeout passed); 130 Ctrl-C. The jobs go on in
the service either way; stopping early names those left, for a later `kseg fetch`."""

_SUBMIT_DESCRIPTION = """\
Upload each IMAGE to a running kseg service as a job, show the jobs' progress, and write each
result like `kseg segment` does: <name>.png per output and result.json, into
./<image stem>-kseg/. All images are submitted before the first is waited on, so the service's
workers run them side by side. The service's URL comes from --url, KSEG_URL, or
KSEG_HOST/KSEG_PORT, else from the file the `kseg up` run here keeps (instance/api_url;
default http://127.0.0.1:8000); the token from --token or KSEG_API_TOKEN, else, for that local
service, from the file it keeps beside it (instance/api_token).
"""

_JOBS_DESCRIPTION = """\
List your newest jobs on a running kseg service, newest first: id, status, image, k, when
submitted, and why a failed job failed. `kseg fetch ID` downloads a result.
"""

_FETCH_DESCRIPTION = """\
Wait for jobs already submitted (e.g. by `kseg submit --no-wait` or the web form) and write
each result like `kseg segment` does, into ./<image stem>-kseg/.
"""


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=None,
        metavar="URL",
        help="the service, e.g. http://127.0.0.1:8000 (default: KSEG_URL, else "
        "http://KSEG_HOST:KSEG_PORT when either is set, else the URL `kseg up` saved in "
        "instance/api_url, else http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--token",
        default=None,
        metavar="TOKEN",
        help="API token (default: KSEG_API_TOKEN; else, for the local service, the one "
        "`kseg up` printed, from instance/api_token)",
    )


def _add_service_arguments(parser: argparse.ArgumentParser) -> None:
    _add_connection_arguments(parser)
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="give up waiting after S seconds per job (default: wait as long as it takes)",
    )
    add_outdir_argument(
        parser,
        "directory for the PNGs and result.json (default: ./<image stem>-kseg/); with "
        "several jobs, each gets its own <image stem>-kseg/ inside OUTDIR",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print no progress and no summary",
    )


def _add_command(
    subparsers: Any,
    name: str,
    func: Callable[[argparse.Namespace], int],
    summary: str,
    description: str,
    epilog: str = _EXIT_CODES,
    common: Callable[[argparse.ArgumentParser], None] | None = None,
) -> Any:
    """The sub-command ``name`` run by ``func``, with ``common``'s arguments (the service's
    address and token, and for submit and fetch where results go)."""
    p = subparsers.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.error = usage_error(f"kseg {name}")
    p.set_defaults(func=func)
    (common or _add_service_arguments)(p)
    return p


def add_client_parsers(subparsers: Any) -> None:
    """Add ``submit``, ``fetch`` and ``jobs`` to the ``kseg`` command's sub-parsers."""
    p = _add_command(
        subparsers,
        "submit",
        run_submit,
        "upload images to a running service, watch progress, download the results",
        _SUBMIT_DESCRIPTION,
    )
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files to segment")
    add_param_arguments(p)
    p.add_argument(
        "--no-reuse",
        action="store_true",
        help="compute again even if the same image and parameters already have a result",
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="only submit: print each job's id and image, then exit (`kseg fetch` later)",
    )
    p.add_argument(
        "--webhook",
        metavar="URL",
        default=None,
        help="the service POSTs each job's final status there, signed (see the README, Webhooks)",
    )
    p.add_argument(
        "--webhook-events",
        metavar="LIST",
        default=None,
        help="only these events, comma-separated: job.succeeded, job.failed, job.canceled "
        "(default: all)",
    )

    p = _add_command(
        subparsers, "fetch", run_fetch, "wait for submitted jobs and download their results",
        _FETCH_DESCRIPTION,
    )  # fmt: skip
    p.add_argument("job_ids", metavar="JOB_ID", nargs="+", help="ids of jobs to fetch")
    p.add_argument(
        "--zip",
        action="store_true",
        help="download each job's export.zip (every output PNG, result.json and a manifest) "
        "as ./<image stem>-kseg.zip (in OUTDIR with -o) instead of unpacked files",
    )

    p = _add_command(
        subparsers, "jobs", run_jobs,
        "list your newest jobs on a running service (ids for kseg fetch)", _JOBS_DESCRIPTION,
        "exit codes: 0 listed; 2 a usage error (e.g. an unknown status);\n"
        "3 the service could not be used (not reachable, token refused, server error).",
        _add_connection_arguments,
    )  # fmt: skip
    p.add_argument(
        "--status", metavar="LIST",
        help="only jobs in these states, comma-separated: queued, running, succeeded, failed, "
        "canceled",
    )  # fmt: skip
    p.add_argument(
        "-n", "--limit", type=int, default=20, metavar="N",
        help="how many, newest first, 1..200 (default: 20)",
    )  # fmt: skip


def _fail(message: str) -> None:
    print(f"kseg: error: {message}", file=sys.stderr)


class Progress:
    """One job's state on stderr: a line redrawn in place on a terminal, else a line per
    change of status or stage (so logs stay short)."""

    def __init__(self, stream: TextIO, *, enabled: bool) -> None:
        self.stream, self.enabled = stream, enabled
        self.live = enabled and stream.isatty()
        self.last: tuple[str, str | None] | None = None

    def show(self, label: str, job: dict[str, Any]) -> None:
        if not self.enabled:
            return
        status, stage = job["status"], job.get("stage")
        text = f"{label}: {status}"
        if status == "running":
            text += f", {stage or 'starting'} {job.get('progress', 0)}%"
        if self.live:
            self.stream.write(f"\r\x1b[K{text}")
            if status in FINAL_STATUSES:
                self.stream.write("\r\x1b[K")
            self.stream.flush()
        elif (status, stage) != self.last:
            print(text, file=self.stream, flush=True)
        self.last = (status, stage)

    def clear(self) -> None:
        """End a line redrawn in place, so that what follows starts on a line of its own."""
        if self.live and self.last is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def outage(self, label: str, exc: Exception) -> None:
        """The service stopped answering while a job is waited on (said even when quiet)."""
        self.clear()
        print(f"{label}: {exc} — still waiting", file=self.stream, flush=True)
        self.last = None  # the next answer is news again


@dataclass
class _Pending:
    """A job to wait for, and what to call it."""

    job_id: str
    label: str  # the image's name, for messages
    stem: str
    job: dict[str, Any] | None = None  # its latest state, if known


def _client(args: argparse.Namespace) -> Client:
    """The service and token of ``--url``/``--token``, else of the settings. With neither a
    token nor a URL given, the token ``kseg up`` keeps under ``instance/`` goes to the
    local service it started (at the URL it keeps beside it, ``instance/api_url``, unless
    ``KSEG_HOST``/``KSEG_PORT`` say otherwise), and to no other server."""
    settings = get_settings()
    token = args.token or settings.api_token
    local = args.url is None and settings.client_url is None
    if token is None and local:
        try:
            token = settings.api_token_file.read_text().strip() or None
        except OSError:  # no `kseg up` here: the service's 401 says how to get a token
            token = None
    # Client drops a trailing /
    return Client(args.url or settings.service_url(), token, on_retry=_say_retry)


def _say_retry(exc: ApiError, wait: float) -> None:
    """A 429 the client waits out: say why, once per wait (the service's message names the
    limit and what else to do)."""
    print(
        f"kseg: the service answered {exc.code}; waiting {wait:g} s as it asks, then sending "
        f"again ({exc.message.rstrip('.')})",
        file=sys.stderr,
        flush=True,
    )


def _outdirs(args: argparse.Namespace, pending: list[_Pending]) -> dict[str, Path]:
    """Each job's output directory: OUTDIR itself for one job, else <stem>-kseg/ in it
    (with the job id's start added where two images share a stem)."""
    if len(pending) == 1 and args.outdir is not None and not getattr(args, "zip", False):
        return {pending[0].job_id: args.outdir}
    base = args.outdir if args.outdir is not None else Path.cwd()
    stems = [p.stem for p in pending]
    return {
        p.job_id: base
        / (f"{p.stem}-kseg" if stems.count(p.stem) == 1 else f"{p.stem}-{p.job_id[:8]}-kseg")
        for p in pending
    }


def _finish(
    client: Client,
    args: argparse.Namespace,
    item: _Pending,
    outdir: Path,
    progress: Progress,
    *,
    first: bool = True,
) -> int:
    """Wait for one job, then download and write its result; returns its exit code."""
    job = client.wait(
        item.job_id,
        timeout=args.timeout,
        on_update=lambda j: progress.show(item.label, j),
        on_outage=lambda exc: progress.outage(item.label, exc),
        job=item.job,
    )
    if job["status"] != "succeeded":
        error = job.get("error") or {
            "code": job["status"],
            "message": f"The job was {job['status']}.",
        }
        _fail(
            f"{item.label}: job {item.job_id} {job['status']}: {error['message']} ({error['code']})"
        )
        return EXIT_JOB
    if getattr(args, "zip", False):
        target = outdir.with_name(outdir.name + ".zip")
        try:
            size = client.save(f"/api/v1/jobs/{job['id']}/export.zip", target)
        except OSError as exc:
            _fail(f"cannot write {target}: {exc.strerror or exc}")
            return EXIT_JOB
        if not args.quiet:
            print_quietly_on_broken_pipe(f"{item.label}: {target} ({size:,} bytes)")
        return EXIT_OK
    result = dict(job["result"] or {})
    urls: dict[str, str] = result.pop("outputs", {}) or {}
    outputs = {name: client.download(url) for name, url in urls.items()}
    image = job.get("image") or {}
    meta = {
        "job_id": job["id"],
        "image": item.label,
        "params": job.get("params"),
        "reused_from": job.get("reused_from"),
        **result,
    }
    try:
        written = write_result(outdir, outputs, meta)
    except OSError as exc:
        _fail(f"cannot write to {outdir}: {exc.strerror or exc}")
        return EXIT_JOB
    if not args.quiet:
        shown = {"width": image.get("width"), "height": image.get("height"), **result}
        text = summary(item.label, outdir, written, shown)
        if job.get("reused_from"):
            text += f"\n(reused the result of job {job['reused_from']}: same image and parameters)"
        print_quietly_on_broken_pipe(text if first else f"\n{text}")  # a blank line between
    return EXIT_OK


def _fetch_later(left: list[_Pending]) -> str:
    ids = " ".join(p.job_id for p in left)
    return f"`kseg fetch {ids}` picks {'it' if len(left) == 1 else 'them'} up later"


def _wait_all(client: Client, args: argparse.Namespace, pending: list[_Pending]) -> int:
    progress = Progress(sys.stderr, enabled=not args.quiet)
    outdirs = _outdirs(args, pending)
    code = EXIT_OK
    for i, item in enumerate(pending):
        try:
            done = _finish(client, args, item, outdirs[item.job_id], progress, first=i == 0)
            code = max(code, done)
        except WaitTimeout as exc:
            _fail(f"{item.label}: {exc}; {_fetch_later(pending[i:])}")
            return EXIT_SERVICE
        except KeyboardInterrupt:
            progress.clear()
            _fail(f"interrupted; the service goes on with the jobs: {_fetch_later(pending[i:])}")
            return EXIT_INTERRUPTED
        except ApiError as exc:
            _fail(f"{item.label}: job {item.job_id}: {exc.message} ({exc.code})")
            if exc.status == 404:  # gone, or never this token's: the others may still be fine
                code = max(code, EXIT_JOB)
                continue
            return EXIT_SERVICE
        except ClientError as exc:
            _fail(str(exc))
            return EXIT_SERVICE
    return code


def run_submit(args: argparse.Namespace) -> int:
    """``kseg submit``: returns the exit code."""
    try:
        params = params_from_args(args).canonical()
    except InvalidParameterError as exc:
        _fail(f"{exc.message} (see `kseg submit --help`)")
        return EXIT_USAGE
    images = [Path(p) for p in args.images]
    for path in images:
        if not path.is_file():
            _fail(
                f"{path}: {'is a directory' if path.is_dir() else 'no such file'}; "
                "give an image file"
            )
            return EXIT_USAGE
    params["reuse"] = not args.no_reuse
    if args.webhook:
        params["webhook_url"] = args.webhook
        params["webhook_events"] = args.webhook_events
    client = _client(args)
    pending: list[_Pending] = []
    try:
        code = _submit_all(client, args, images, params, pending)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
        _fail("interrupted")
    if code in {EXIT_SERVICE, EXIT_INTERRUPTED}:  # stopped before every image was sent
        if pending:
            _fail(f"the jobs submitted go on: {_fetch_later(pending)}")
        return code
    if args.no_wait or not pending:
        return code
    return max(code, _wait_all(client, args, pending))


def _submit_all(
    client: Client,
    args: argparse.Namespace,
    images: list[Path],
    params: dict[str, Any],
    pending: list[_Pending],
) -> int:
    """Upload each image as a job, adding it to ``pending``; returns the exit code so far
    (``EXIT_SERVICE``: stopped early, the service being unusable)."""
    code = EXIT_OK
    for path in images:
        try:
            job = client.submit(path.read_bytes(), path.name, params)
        except OSError as exc:
            _fail(f"{path}: cannot read: {exc.strerror or exc}")
            code = EXIT_JOB
            continue
        except ApiError as exc:
            _fail(f"{path}: {exc.message} ({exc.code})")
            if exc.status in {401, 403} or exc.status >= 500:
                return EXIT_SERVICE
            code = EXIT_JOB  # this image was refused; the others may be fine
            continue
        except ClientError as exc:
            _fail(str(exc))
            return EXIT_SERVICE
        if args.no_wait:
            print(f"{job['id']}\t{path}", flush=True)
        pending.append(_Pending(job["id"], path.name, path.stem, job))
    return code


def run_fetch(args: argparse.Namespace) -> int:
    """``kseg fetch``: returns the exit code."""
    client = _client(args)
    pending: list[_Pending] = []
    code = EXIT_OK
    for job_id in args.job_ids:
        try:
            job = client.job(job_id)
        except ApiError as exc:
            _fail(f"job {job_id}: {exc.message} ({exc.code})")
            if exc.status != 404:
                return EXIT_SERVICE
            code = EXIT_JOB
            continue
        except ClientError as exc:
            _fail(str(exc))
            return EXIT_SERVICE
        name = (job.get("image") or {}).get("filename") or job_id
        pending.append(_Pending(job_id, name, Path(name).stem or job_id, job))
    if not pending:
        return code
    return max(code, _wait_all(client, args, pending))


def run_jobs(args: argparse.Namespace) -> int:
    """``kseg jobs``: returns the exit code."""
    try:
        items = _client(args).jobs(status=args.status, limit=args.limit)
    except ApiError as exc:
        _fail(f"{exc.message} ({exc.code})")
        return EXIT_USAGE if exc.status in {400, 422} else EXIT_SERVICE
    except ClientError as exc:
        _fail(str(exc))
        return EXIT_SERVICE
    if not items:
        print_quietly_on_broken_pipe(
            f"no jobs with status {args.status}" if args.status
            else "no jobs yet; submit one with `kseg submit IMAGE`"
        )  # fmt: skip
        return EXIT_OK
    rows = [("ID", "STATUS", "IMAGE", "K", "SUBMITTED (UTC)", "ERROR")]
    for job in items:
        result, error = job.get("result") or {}, job.get("error") or {}
        k = result.get("k", job["params"].get("k"))
        rows.append((
            job["id"], job["status"], (job.get("image") or {}).get("filename") or "-", str(k),
            job["created_at"].replace("T", " ")[:19], error.get("code", ""),
        ))  # fmt: skip
    print_quietly_on_broken_pipe(format_table(rows))
    return EXIT_OK
