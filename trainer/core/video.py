"""Episode frames as an MP4 (imageio with its ffmpeg) and as an animated GIF, the form
TensorBoard's image dashboard plays (both need the video extra), and the start-time check that
the env renders such frames."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np

from trainer.core.config import EnvConfig
from trainer.core.env_making import EnvBuildError, make_env
from trainer.core.errors import UserError

GIF_MAX_FRAMES = 200  # a longer episode is shown at every k-th frame: the GIF stays a few MB
FRAME = "an (H, W, 3) uint8 array"
VIDEO_FILE = "episode_0.mp4"  # what `trainer evaluate --video DIR` writes in DIR


class VideoError(UserError):
    """A video that cannot be recorded: the env gives no frames, or the extra is missing."""


def require_video() -> None:
    """Fail early, in one line, when the video extra is missing."""
    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise VideoError("recording video needs the video extra: pip install 'ray-ppo-trainer[video]'") from None


def check_renders(env: EnvConfig, without_video: str, agents: bool = False) -> None:
    """Fail at start, in one line, when `env` cannot give frames to record: its constructor takes
    no render_mode, or after a reset its render() returns no image. `without_video` says how to run
    without recording (e.g. "set eval.video_every: 0"). `agents`: a PettingZoo env."""
    require_video()
    cannot = f"env {env.id!r} cannot render rgb_array frames"
    try:
        if agents:
            from trainer.core.agent_envs import AgentEnv  # it imports this module's neighbours, not this one

            made = AgentEnv(env, render_mode="rgb_array")
        else:
            made = make_env(env, render_mode="rgb_array")
    except EnvBuildError as exc:
        if "unexpected keyword argument 'render_mode'" not in str(exc):
            raise
        raise VideoError(
            f"{cannot}: its constructor takes no render_mode; {without_video}, or give it a render_mode "
            f"argument with which render() returns {FRAME}"
        ) from None
    try:
        made.reset(seed=0)
        frame = made.render()
    except Exception as exc:  # the env's own rendering code failed (e.g. pygame is not installed)
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise VideoError(f"{cannot}: its first frame raised {type(exc).__name__}: {detail}; {without_video}") from None
    finally:
        made.close()
    if (problem := frame_problem(frame)) is not None:
        raise VideoError(f"{cannot}: {problem}; {without_video}, or make render() return {FRAME}")


def frame_problem(frame) -> str | None:
    """Why a render() result is no frame to record (None: it is one)."""
    if not isinstance(frame, np.ndarray):
        what = "None" if frame is None else f"a {type(frame).__name__}"
        return f"its render() returned {what} with render_mode='rgb_array'"
    if frame.dtype != np.uint8 or not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (3, 4))):
        return f"its render() returned a {frame.dtype} array of shape {frame.shape}"
    return None


def frame_of(env, env_id: str) -> np.ndarray:
    """The env's frame now; an env that stops giving images mid-episode is stopped in one line."""
    frame = env.render()
    if (problem := frame_problem(frame)) is not None:
        raise VideoError(
            f"env {env_id!r} cannot render rgb_array frames: {problem} during the recorded episode; "
            f"make render() return {FRAME}"
        )
    return frame


def mp4_bytes(frames: list[np.ndarray], fps: int) -> bytes:
    require_video()
    import imageio.v2 as imageio

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "episode.mp4"
        imageio.mimwrite(path, frames, fps=fps, codec="libx264", macro_block_size=1, ffmpeg_log_level="error")
        return path.read_bytes()


def write_mp4(frames: list[np.ndarray], path: Path, fps: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mp4_bytes(frames, fps))
    return path


def save_video(frames: list[np.ndarray], fps: int, directory: Path, name: str) -> str:
    """`trainer evaluate --video`: the recorded episode as DIRECTORY/NAME, or one line why not."""
    path = directory / name
    try:
        return str(write_mp4(frames, path, fps))
    except OSError as exc:
        raise VideoError(f"could not write the video {path}: {exc.strerror or exc}") from None


def gif_bytes(frames: list[np.ndarray], fps: int) -> bytes:
    from PIL import Image  # imageio's own dependency

    stride = -(-len(frames) // GIF_MAX_FRAMES)
    images = [Image.fromarray(frame) for frame in frames[::stride]]
    data = io.BytesIO()
    duration_ms = max(20, round(1000 * stride / fps))
    images[0].save(data, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return data.getvalue()
