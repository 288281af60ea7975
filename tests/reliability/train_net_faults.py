"""TEST-ONLY launcher: runs tools/train_net.py with one fault armed, without any hook in the library.

    python tests/reliability/train_net_faults.py <train_net overrides>
    torchrun --nproc_per_node=2 tests/reliability/train_net_faults.py <train_net overrides>

It patches functions in this process only, then runs tools/train_net.py as __main__:
  SLOW_CHECKPOINT_WRITE=ITER:NAME  the checkpoint NAME (last.pth, model_final.pth, ...) written
                                at iteration ITER writes half of its bytes into its temporary
                                file, prints SLOW_WRITE_IN_PROGRESS and sleeps, so a test can
                                SIGKILL the run in the middle of that write (named, not counted:
                                other checkpoints, e.g. model_best.pth, come and go);
  RAISE_AT=ITER:RANK            the process of that rank raises RuntimeError at the start
                                of iteration ITER (1-based), as a crashing rank would.
"""
import io
import os
import runpy
import sys
import time
from pathlib import Path

TRAIN_NET = str(Path(__file__).resolve().parents[2] / "tools" / "train_net.py")


def arm_slow_checkpoint_write(spec: str) -> None:
    import torch

    iteration, name = spec.split(":")
    real_save = torch.save

    def writing(f) -> str:
        # save_checkpoint writes to an open temporary file ".<name>.<random>.tmp" next to the target.
        try:
            return os.path.basename(os.readlink(f"/proc/self/fd/{f.fileno()}"))
        except (AttributeError, OSError):
            return ""

    def slow_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("iteration") == int(iteration):
            if writing(f).startswith(f".{name}."):
                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                data = buffer.getvalue()
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                print("SLOW_WRITE_IN_PROGRESS", flush=True)
                time.sleep(600)
        return real_save(obj, f, *args, **kwargs)

    torch.save = slow_save


def arm_raise(spec: str) -> None:
    iteration, rank = (int(v) for v in spec.split(":"))
    if int(os.environ.get("RANK", 0)) != rank:
        return
    from detector.engine.trainer import Trainer

    real_step = Trainer.run_step

    def failing_step(self):
        if self.iter + 1 == iteration:
            raise RuntimeError(f"injected fault: rank {rank} fails at iteration {iteration}")
        return real_step(self)

    Trainer.run_step = failing_step


if __name__ == "__main__":
    if os.environ.get("SLOW_CHECKPOINT_WRITE"):
        arm_slow_checkpoint_write(os.environ["SLOW_CHECKPOINT_WRITE"])
    if os.environ.get("RAISE_AT"):
        arm_raise(os.environ["RAISE_AT"])
    sys.argv = [TRAIN_NET] + sys.argv[1:]
    runpy.run_path(TRAIN_NET, run_name="__main__")
