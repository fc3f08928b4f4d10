"""Where a ComfyUI install keeps its input, output and temp files, and removing a run's files from them.

ComfyUI has no route that deletes a file, so the engine deletes what a run left behind itself, on the shared
disk, when it knows the install's folders (a supervised ComfyUI, or one attached with its dir set).
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["COMFYGATE_FOLDER", "ComfyDirs", "prompt_folder"]

log = logging.getLogger(__name__)

# comfygate's folder in ComfyUI's input and output folders: each prompt saves into output/comfygate/<prompt id>/,
# each job's uploads go to input/comfygate/<prompt id of its first submission>/.
COMFYGATE_FOLDER = "comfygate"


def prompt_folder(prompt_id: str) -> str:
    """The subfolder (of ComfyUI's output folder) a prompt saves into, or (of its input folder) its uploads."""
    return f"{COMFYGATE_FOLDER}/{prompt_id}"


@dataclass(frozen=True)
class ComfyDirs:
    input: Path
    output: Path
    temp: Path

    @classmethod
    def of(cls, install: Path, args: Sequence[str] = ()) -> ComfyDirs:
        """The folders of the install at ``install`` started with ``args``, as ComfyUI's own options set them:
        --base-directory moves all three, --input/--output-directory one each, --temp-directory X means X/temp.
        Relative paths are relative to the install (ComfyUI runs there)."""
        parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
        for option in ("--base-directory", "--input-directory", "--output-directory", "--temp-directory"):
            parser.add_argument(option)
        try:
            known, _ = parser.parse_known_args(list(args))
        except (argparse.ArgumentError, SystemExit) as exc:
            raise ValueError(f"cannot read ComfyUI's folders from its arguments {list(args)}: {exc}") from None
        install = install.resolve()

        def under_install(path: str) -> Path:
            return (install / path).resolve()  # an absolute path stays itself

        base = under_install(known.base_directory) if known.base_directory else install
        return cls(
            input=under_install(known.input_directory) if known.input_directory else base / "input",
            output=under_install(known.output_directory) if known.output_directory else base / "output",
            temp=under_install(known.temp_directory) / "temp" if known.temp_directory else base / "temp",
        )

    def folder(self, kind: str) -> Path | None:
        return {"input": self.input, "output": self.output, "temp": self.temp}.get(kind)

    def delete_file(self, kind: str, subfolder: str, filename: str) -> None:
        path = _inside(self.folder(kind), subfolder, filename)
        if path is None:
            log.warning("not deleting ComfyUI file %r in %r of %s: outside its folder", filename, subfolder, kind)
            return
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # cleanup must not hide how the run ended
            log.warning("could not delete ComfyUI file %s: %s", path, exc)

    def delete_tree(self, kind: str, subfolder: str) -> None:
        path = _inside(self.folder(kind), subfolder)
        if path is None or path == self.folder(kind).resolve():
            log.warning("not deleting ComfyUI folder %r of %s: outside its folder", subfolder, kind)
            return
        shutil.rmtree(path, ignore_errors=True)


def _inside(folder: Path | None, *parts: str) -> Path | None:
    """folder/parts, or None when that leaves the folder ("..", an absolute part, a link out)."""
    if folder is None:
        return None
    root = folder.resolve()
    path = root.joinpath(*parts).resolve()
    return path if path.is_relative_to(root) else None
