"""A real ComfyUI for the host tests: set up once under `<repo>/.comfy/`, started per session.

The host is current upstream ComfyUI, the one users run. `ensure_comfyui()` takes its
source from `COMFYUI_SRC` (a ComfyUI folder or a `.tar.gz` of one), else from
`../shared/comfyui/` beside the repository (the project's copy of upstream ComfyUI), and
otherwise stops with a message saying how to get it. It unpacks or copies the source to
`.comfy/ComfyUI`, installs the copy's `requirements.txt` into this Python with the torch
and torchvision already here pinned (torchaudio, which ComfyUI's LTXV nodes import, has
no release for every torch, so it is installed without its dependencies), and links this
pack into its `custom_nodes/`. Every step is skipped when already done for the same
source, so a fresh clone pays for it once.

`ComfyServer` starts `main.py --cpu --listen 127.0.0.1 --port P` on a free port with its
own output, input, temp and model folders (`cpu=False`: on ComfyUI's own choice of device), waits for `/object_info`, and talks to it
over HTTP and its websocket.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import NamedTuple

REPO_ROOT = Path(__file__).resolve().parents[2]
COMFY_HOME = REPO_ROOT / ".comfy"  # git-ignored
COMFY_ROOT = COMFY_HOME / "ComfyUI"
SHARED_COMFYUI = REPO_ROOT.parent / "shared" / "comfyui"
SOURCE_VARIABLE = "COMFYUI_SRC"
PACK_LINK_NAME = "comfyui-ltxv-core"
SETUP_MARKER = COMFY_ROOT / ".ltxv-core-setup"
STARTUP_TIMEOUT_S = 180
# The newest torchaudio seen to import beside the torch of this project's venv; pip's
# resolver would otherwise replace torch to satisfy torchaudio's exact pin.
TORCHAUDIO_FALLBACK = "torchaudio==2.11.0"
HOW_TO_GET_COMFYUI = (
    "no ComfyUI source for the host tests: set COMFYUI_SRC to a ComfyUI folder or a .tar.gz of one "
    "(e.g. `git clone https://github.com/comfyanonymous/ComfyUI` or a release archive), or put "
    "the archive in ../shared/comfyui/ beside this repository"
)


# ---------------------------------------------------------------- one-time setup


def comfyui_source() -> Path:
    """The ComfyUI to test against: `COMFYUI_SRC`, else the archive or folder in
    `../shared/comfyui/`."""
    given = os.environ.get(SOURCE_VARIABLE)
    if given:
        path = Path(given).expanduser().resolve()
        if not (_is_archive(path) or (path / "main.py").is_file()):
            raise RuntimeError(f"{SOURCE_VARIABLE}={given} is neither a ComfyUI folder (with main.py) nor a .tar.gz")
        return path
    if SHARED_COMFYUI.is_dir():
        found = sorted(SHARED_COMFYUI.glob("ComfyUI*.tar.gz")) + sorted(
            p for p in SHARED_COMFYUI.iterdir() if (p / "main.py").is_file()
        )
        if found:
            return found[-1] if _is_archive(found[-1]) else found[0]
    raise RuntimeError(HOW_TO_GET_COMFYUI)


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar.gz", ".tgz"))


def ensure_comfyui() -> Path:
    """Set up `.comfy/ComfyUI` from `comfyui_source()` (idempotent) and return its folder."""
    source = comfyui_source()
    stamp = _setup_stamp(source)
    if not (SETUP_MARKER.is_file() and SETUP_MARKER.read_text() == stamp):
        if COMFY_ROOT.exists():
            shutil.rmtree(COMFY_ROOT)  # another source, or a half-finished earlier setup
        unpack_comfyui(source, COMFY_ROOT)
        _install_requirements()
        SETUP_MARKER.write_text(stamp)
    link_pack()
    return COMFY_ROOT


def comfyui_version(root: Path = COMFY_ROOT) -> str:
    """ComfyUI's own version string (`comfyui_version.py`), or "unknown"."""
    path = root / "comfyui_version.py"
    found = re.search(r'__version__\s*=\s*"([^"]+)"', path.read_text()) if path.is_file() else None
    return found.group(1) if found else "unknown"


def _setup_stamp(source: Path) -> str:
    identity = source.stat().st_size if source.is_file() else source.stat().st_mtime_ns
    digest = hashlib.sha1(f"{source}:{identity}".encode()).hexdigest()[:12]
    return f"source={source} id={digest} python={sys.executable}\n"


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


def unpack_comfyui(source: Path, destination: Path) -> None:
    """A ComfyUI folder (or archive) copied to `destination`, as a user unpacks it."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="ComfyUI.", dir=destination.parent))
    staging.chmod(0o755)  # mkdtemp makes it private
    if source.is_dir():
        shutil.copytree(source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    else:
        with tarfile.open(source) as archive:
            archive.extractall(staging, filter="data")
        inner = [p for p in staging.iterdir() if (p / "main.py").is_file()]
        if not (staging / "main.py").is_file():
            if len(inner) != 1:
                raise RuntimeError(f"{source} holds no ComfyUI folder (no main.py at its top or one level down)")
            for entry in inner[0].iterdir():
                entry.rename(staging / entry.name)
            inner[0].rmdir()
    for path in staging.rglob("*"):  # archives may be read-only; the tests write beside them
        path.chmod(path.stat().st_mode | 0o200)
    (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
    staging.rename(destination)  # atomic: a crash part-way leaves no half copy under the final name


def _install_requirements() -> None:
    """Install ComfyUI's requirements, never changing the torch and torchvision present."""
    pins = []
    for name in ("torch", "torchvision"):
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    lines = (COMFY_ROOT / "requirements.txt").read_text().splitlines()
    wanted = [line for line in lines if not re.match(r"\s*torchaudio\b", line)]
    with tempfile.TemporaryDirectory() as folder:
        constraints, requirements = Path(folder, "constraints.txt"), Path(folder, "requirements.txt")
        constraints.write_text("\n".join(pins) + "\n")
        requirements.write_text("\n".join(wanted) + "\n")
        _pip("install", "-c", str(constraints), "-r", str(requirements))
    try:
        importlib.metadata.version("torchaudio")
    except importlib.metadata.PackageNotFoundError:
        _pip("install", "--no-deps", TORCHAUDIO_FALLBACK)


def install_as_the_readme_says(comfy_root: Path) -> list[str]:
    """Run the README's "Installing into ComfyUI" commands in `comfy_root`, as written,
    with two substitutions: this Python for `python`, and this repository (its committed
    state, as a clone gives) for the URL. Starting ComfyUI is left to `ComfyServer`.
    Returns the commands run."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Installing into ComfyUI") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    run = []
    for command in commands:
        if command.strip().startswith("python main.py"):
            continue
        command = re.sub(r"https://github\.com/\S+", str(REPO_ROOT), command)
        command = re.sub(r"^python ", f"{sys.executable} ", command.strip())
        subprocess.run(command, shell=True, cwd=comfy_root, check=True, capture_output=True)
        run.append(command)
    return run


def link_pack(root: Path = COMFY_ROOT) -> None:
    link = root / "custom_nodes" / PACK_LINK_NAME
    if link.is_symlink() and link.resolve() == REPO_ROOT:
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    link.symlink_to(REPO_ROOT, target_is_directory=True)


# ---------------------------------------------------------------- a running server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Event(NamedTuple):
    """One websocket message: its type, its data (the bytes of a binary preview) and when
    it arrived (`time.perf_counter()`)."""

    kind: str
    data: object
    at: float


class PromptRejected(Exception):
    """`/prompt` answered 400: the prompt did not pass ComfyUI's validation."""

    def __init__(self, body: dict):
        super().__init__(json.dumps(body))
        self.body = body


class ComfyServer:
    """One ComfyUI process with folders of its own under `base`."""

    def __init__(
        self,
        base: Path,
        root: Path = COMFY_ROOT,
        python_path: tuple[Path, ...] = (),
        cpu: bool = True,
        extra_args: tuple[str, ...] = (),
        custom_nodes: tuple[Path, ...] = (),
    ):
        self.base = Path(base)
        self.cpu = cpu
        self.extra_args = extra_args  # more of main.py's flags
        self.custom_nodes = custom_nodes  # more folders of custom nodes, beside ComfyUI's own
        self.root = Path(root)
        self.python_path = python_path
        self.output_dir = self.base / "output"
        self.input_dir = self.base / "input"
        self.temp_dir = self.base / "temp"
        self.models_dir = self.base / "models"
        self.checkpoints_dir = self.models_dir / "checkpoints"
        self.text_encoders_dir = self.models_dir / "text_encoders"
        self.upscale_models_dir = self.models_dir / "latent_upscale_models"
        self.loras_dir = self.models_dir / "loras"
        self.diffusion_models_dir = self.models_dir / "diffusion_models"
        self.vae_dir = self.models_dir / "vae"
        self.log_path = self.base / "server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = uuid.uuid4().hex
        self.process: subprocess.Popen | None = None
        for folder in (
            self.output_dir,
            self.input_dir,
            self.temp_dir,
            self.checkpoints_dir,
            self.text_encoders_dir,
            self.upscale_models_dir,
            self.loras_dir,
            self.diffusion_models_dir,
            self.vae_dir,
        ):
            folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> ComfyServer:
        command = [
            sys.executable,
            "main.py",
            *(["--cpu"] if self.cpu else []),
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--output-directory",
            str(self.output_dir),
            "--input-directory",
            str(self.input_dir),
            "--temp-directory",
            str(self.temp_dir),
            "--extra-model-paths-config",
            str(self._model_paths_yaml()),
            "--disable-auto-launch",
            "--preview-method",
            "auto",
            *self.extra_args,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"OMP_NUM_THREADS": "2"} if self.cpu else {})}
        if self.python_path:
            env["PYTHONPATH"] = os.pathsep.join(map(str, self.python_path))
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_until_serving()
        return self

    def _model_paths_yaml(self) -> Path:
        # ComfyUI's own format for extra model folders; our folders come first in each list
        path = self.base / "extra_model_paths.yaml"
        path.write_text(
            "ltxv_core_tests:\n"
            f"    base_path: {self.models_dir}\n"
            "    checkpoints: checkpoints\n"
            "    text_encoders: text_encoders\n"
            "    latent_upscale_models: latent_upscale_models\n"
            "    loras: loras\n"
            "    diffusion_models: diffusion_models\n"
            "    vae: vae\n" + "".join(f"    custom_nodes: {folder}\n" for folder in self.custom_nodes)
        )
        return path

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode} at start:\n{self.log_tail()}")
            try:
                self.get("/object_info")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not serve /object_info within {STARTUP_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    # -------------------------------------------------------------- HTTP

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body or {}).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text.strip() else {}

    def queue_prompt(self, prompt: dict, workflow: dict | None = None) -> str:
        """Post an API-format prompt; return its id, or raise `PromptRejected` with the
        server's error body when validation fails."""
        body = {"prompt": prompt, "client_id": self.client_id}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        try:
            return self.post("/prompt", body)["prompt_id"]
        except urllib.error.HTTPError as error:
            raise PromptRejected(json.loads(error.read())) from None

    def wait_for_history(self, prompt_id: str, timeout_s: float = 240) -> dict:
        """Block until the prompt has finished (done, failed or interrupted) and return
        its `/history` entry."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry is not None:
                return entry
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout_s} s:\n{self.log_tail()}")

    def interrupt(self) -> None:
        self.post("/interrupt")

    def run_watching(self, prompt: dict, interrupt_at_step: int | None = None, timeout_s: float = 240):
        """Queue a prompt while listening on the websocket; with `interrupt_at_step`,
        press Cancel (`/interrupt`) once the progress bar reaches that step. Returns the
        prompt id and the messages seen as `Event`s: (type, data, at) for JSON messages,
        ("preview", bytes, at) for binary preview images."""
        return asyncio.run(self._run_watching(prompt, interrupt_at_step, timeout_s))

    async def _run_watching(self, prompt, interrupt_at_step, timeout_s):
        import aiohttp  # a ComfyUI requirement, so present wherever the server runs

        events: list[Event] = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{self.url}/ws?clientId={self.client_id}") as socket_:
                prompt_id = await asyncio.to_thread(self.queue_prompt, prompt)
                async with asyncio.timeout(timeout_s):
                    async for message in socket_:
                        if message.type == aiohttp.WSMsgType.BINARY:
                            events.append(Event("preview", message.data, time.perf_counter()))
                            continue
                        event = json.loads(message.data)
                        kind, data = event["type"], event.get("data", {})
                        events.append(Event(kind, data, time.perf_counter()))
                        if kind == "progress" and interrupt_at_step is not None and data["value"] >= interrupt_at_step:
                            interrupt_at_step = None
                            await asyncio.to_thread(self.interrupt)
                        if _prompt_finished(kind, data, prompt_id):
                            break
        return prompt_id, events

    def output_files(self, entry: dict) -> list[Path]:
        """Files that the prompt's output nodes listed in the UI, as paths on disk."""
        paths = []
        for node_output in entry.get("outputs", {}).values():
            for item in node_output.get("images", []) + node_output.get("videos", []):
                paths.append(self.output_dir / item.get("subfolder", "") / item["filename"])
        return paths


def _prompt_finished(kind: str, data: dict, prompt_id: str) -> bool:
    if data.get("prompt_id") not in (None, prompt_id):
        return False
    if kind in ("execution_error", "execution_interrupted"):
        return True
    # ComfyUI says `executing` with node None when a prompt is done
    return kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id


def status_messages(entry: dict) -> dict[str, dict]:
    """A `/history` entry's status messages by event name (`execution_error`, ...)."""
    return {event: data for event, data in entry.get("status", {}).get("messages", [])}


def assert_succeeded(entry: dict) -> None:
    """Fail with the node's exception and traceback when a prompt did not succeed."""
    error = status_messages(entry).get("execution_error", {})
    assert entry["status"]["status_str"] == "success", (
        f"{error.get('node_type')}: {error.get('exception_message')}\n{''.join(error.get('traceback', []))}"
    )
