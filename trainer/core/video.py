"""Episode frames as an MP4 (imageio with its ffmpeg) and as an animated GIF, the form
TensorBoard's image dashboard plays. Both need the video extra."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np

from trainer.core.errors import UserError

GIF_MAX_FRAMES = 200  # a longer episode is shown at every k-th frame: the GIF stays a few MB


def require_video() -> None:
    """Fail early, in one line, when the video extra is missing."""
    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise UserError("recording video needs the video extra: pip install 'ray-ppo-trainer[video]'") from None


def mp4_bytes(frames: list[np.ndarray], fps: int) -> bytes:
    require_video()
    import imageio.v2 as imageio

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "episode.mp4"
        imageio.mimwrite(path, frames, fps=fps, codec="libx264", macro_block_size=1)
        return path.read_bytes()


def write_mp4(frames: list[np.ndarray], path: Path, fps: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mp4_bytes(frames, fps))
    return path


def gif_bytes(frames: list[np.ndarray], fps: int) -> bytes:
    from PIL import Image  # imageio's own dependency

    stride = -(-len(frames) // GIF_MAX_FRAMES)
    images = [Image.fromarray(frame) for frame in frames[::stride]]
    data = io.BytesIO()
    duration_ms = max(20, round(1000 * stride / fps))
    images[0].save(data, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return data.getvalue()
