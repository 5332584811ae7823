"""The LitServe peer of bench/serving_bench.py: the same TorchScript file, served by LitServe.

Runs in its own virtual environment (LitServe needs a newer FastAPI than ebmops pins), made by
``bench.harness.litserve_python``. Body and answer as mlflow's: ``{"inputs": [[40 floats], ...]}``
-> ``{"predictions": [...]}`` on ``POST /predict``. Dynamic batching on (LitServe's own: up to
``--max-batch-size`` requests gathered for ``--batch-timeout`` s, their rows scored in one call),
one inference worker on the CPU, torch on one thread: the node's settings.

    python bench/litserve_server.py --model model.pt --port 8000
"""

from __future__ import annotations

import argparse

import litserve as ls
import numpy as np
import torch


class EnergyAPI(ls.LitAPI):
    def __init__(self, model_path: str, **kw):
        super().__init__(**kw)
        self.model_path = model_path

    def setup(self, device):
        torch.set_num_threads(1)
        self.model = torch.jit.load(self.model_path).eval()
        with torch.inference_mode():
            self.model(torch.zeros((8, 40)))  # warm-up, as the node does before it reports ready

    def decode_request(self, request):
        return np.asarray(request["inputs"], dtype=np.float32)

    def batch(self, inputs):
        return inputs  # a list of [n_i, 40] arrays; predict stacks them once

    def predict(self, xs):
        sizes = [len(x) for x in xs]
        with torch.inference_mode():
            e = self.model(torch.from_numpy(np.concatenate(xs))).numpy()
        return np.split(e, np.cumsum(sizes)[:-1])

    def unbatch(self, outputs):
        return outputs

    def encode_response(self, output):
        return {"predictions": output.tolist()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--batch-timeout", type=float, default=0.001)
    a = p.parse_args()
    api = EnergyAPI(a.model, max_batch_size=a.max_batch_size, batch_timeout=a.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=a.port, generate_client_file=False, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
