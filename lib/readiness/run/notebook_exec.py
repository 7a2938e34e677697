"""Executing one phase notebook into the run folder, headless (DESIGN §2 step 4).

papermill's Python API runs in the runner's process (a kernel start costs well under a
second; its CLI would cost seconds per notebook). Every save papermill makes of the
executing notebook goes through the run folder (atomic, redacted), so a killed run keeps
the notebook as far as it got; kernels talk over Unix sockets, not loopback TCP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager

from readiness.core.runfolder import RunFolder


class IpcKernelManager(AsyncKernelManager):
    """Kernels talk over Unix sockets in the user's runtime folder, not loopback TCP.

    Other local users cannot connect to a Unix socket in a private folder, whereas any of
    them can reach a loopback TCP port; it also spares every phase a warning about
    unencrypted TCP.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("transport", "ipc")
        super().__init__(**kwargs)


class _RunFolderIO:
    """papermill I/O handler for ``runfolder://<relpath>`` output paths.

    papermill saves the executing notebook after every cell; routing those saves through
    the run folder means they are atomic and redacted like every other artifact, and a
    killed run keeps the notebook as far as it got.
    """

    run: RunFolder | None = None
    phase: str | None = None

    @classmethod
    def _rel(cls, path: str) -> str:
        return path.removeprefix(_SCHEME)

    @classmethod
    def write(cls, buf: str, path: str) -> None:
        assert cls.run is not None
        cls.run.write_text(cls._rel(path), buf, producer=cls.phase)

    @classmethod
    def read(cls, path: str) -> str:
        assert cls.run is not None
        return cls.run.path(cls._rel(path)).read_text()

    @classmethod
    def listdir(cls, path: str) -> list[str]:
        raise NotImplementedError("run folder outputs are written, not listed")

    @classmethod
    def pretty_path(cls, path: str) -> str:
        return path


_SCHEME = "runfolder://"
_registered = False


def execute_notebook(run: RunFolder, phase: str, notebook: Path, params_file: Path) -> str | None:
    """Execute one notebook; returns an error summary or None. The output is always kept."""
    import papermill as pm
    from papermill.iorw import papermill_io

    global _registered
    if not _registered:
        papermill_io.register(_SCHEME, _RunFolderIO)
        _registered = True
    _RunFolderIO.run, _RunFolderIO.phase = run, phase
    try:
        pm.execute_notebook(str(notebook), f"{_SCHEME}notebooks/{phase}.ipynb", kernel_name="python3",
                            progress_bar=False, cwd=str(notebook.parent), request_save_on_cell_execute=True,
                            kernel_manager_class=f"{__name__}.IpcKernelManager",
                            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],  # shutdown chatter
                            parameters={"params_file": str(params_file), "run_dir": str(run.root)})
    except pm.PapermillExecutionError as exc:
        return f"{exc.ename}: {exc.evalue}".strip()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # kernel died, bad notebook: the phase is ERROR, the run goes on
        return f"{type(exc).__name__}: {exc}"
    return None
