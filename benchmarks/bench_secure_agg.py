"""Secure aggregation vs plain FedAvg: bytes and seconds per round, client and server side.

Both aggregate the same client updates, shaped like the built-in model's trainable weights
(``--update head``: the article's Dense128 + Dense10 head, 17,802 values; ``full``: the whole
backbone and head, 158,186 values), filled with random numbers of a typical delta's size.
Plain FedAvg: each client uploads float32 values, the server takes the weighted mean. Secure
aggregation (``fedtl_helpers.transforms.secure_agg``): the four-step protocol with real X25519 keys,
Shamir shares and ChaCha20 masks, no dropouts. The model broadcast is the same in both and is
left out of both.

    python benchmarks/bench_secure_agg.py [--clients 5 20 100] [--update head full] [--flower-clients 5 20]

**Flower's SecAgg+, as the deployment runs it** (``--flower-clients``, head-sized updates):
the ServerApp's own ``FlowerClients.train_summed`` (``SecAggPlusWorkflow`` driven by the
course's round) with each node's ``secaggplus_mod`` answering in process, every message copied
as the network would, the same updates and counts. Its bytes are counted from the messages'
records (``server_app.record_bytes``: arrays as serialised by Flower, config values as
``ConfigRecord.count_bytes`` counts them); the broadcast weights inside the masked-input
stage's messages are left out, as above. Summary keys ``secaggplus_*``: per node and round,
up and down, against the in-process protocol's (``inprocess_*``) and plain FedAvg's upload.

Last line: one JSON object. ``bytes_overhead_100`` is the ratio, with 100 clients and the head's
update size, of *all* bytes secure aggregation moves in one round (masked inputs, public keys,
encrypted shares, unmasking requests and answers, both directions) to the bytes plain FedAvg
uploads (100 float32 updates). ``upload_overhead_100`` counts only the clients' uploads. Seconds
are per client (mean) and for the server, per round; "10% dropped" is the server's time when a
tenth of the clients vanish after sharing keys and their masks must be rebuilt from shares.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def update_shapes(strategy: str) -> list[tuple[int, ...]]:
    """Shapes of the tensors clients train (and send) with the built-in model and ``strategy``."""
    from fedtl_helpers.modeling import models
    model = models.build_model("builtin_cnn", None, 10, (32, 32, 3), None, 0)
    models.set_strategy(model, "builtin_cnn", strategy, 1)
    return [w.shape for w, m in zip(model.get_weights(), models.updatable_mask(model)) if m]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[5, 20, 100])
    p.add_argument("--update", nargs="+", default=["head", "full"], choices=["head", "full"])
    p.add_argument("--flower-clients", type=int, nargs="*", default=[5, 20],
                   help="clients per round for Flower's SecAgg+ (head-sized updates; none: skip)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if any(n < 3 for n in args.flower_clients):
        p.error("--flower-clients: allowed integers >= 3 (the deployment refuses SecAgg+ below 3)")

    import numpy as np

    from fedtl_helpers.transforms import aggregation, compression, secure_agg
    rows = []
    for strategy in args.update:
        shapes = update_shapes(strategy)
        size = sum(int(np.prod(s)) for s in shapes)
        for n in args.clients:
            rng = np.random.default_rng([args.seed, n])
            updates = [[rng.normal(0, 0.01, s).astype(np.float32) for s in shapes] for _ in range(n)]
            counts = rng.integers(100, 1000, n).tolist()
            t0 = time.perf_counter()
            sent = [compression.decode(compression.encode_dense(u)) for u in updates]
            plain_client = (time.perf_counter() - t0) / n
            plain_bytes = sum(compression.dense_nbytes(u) for u in updates)
            t0 = time.perf_counter()
            plain = aggregation.fedavg(sent, counts)
            plain_server = time.perf_counter() - t0
            res = secure_agg.secure_aggregate(updates, counts, clip=1.0)
            err = max(float(np.abs(a - b).max()) for a, b in zip(res.mean, plain))
            gone = list(range(max(1, n // 10)))  # 10% drop after sharing keys: the server rebuilds masks
            dropped = secure_agg.secure_aggregate(updates, counts, clip=1.0, drop_before_upload=gone)
            rows.append(dict(
                update=strategy, values=size, clients=n, plain_bytes=plain_bytes, secure_bytes=res.nbytes(),
                secure_up=res.nbytes(direction="up"), plain_client_s=plain_client,
                secure_client_s=sum(res.client_seconds.values()) / n, plain_server_s=plain_server,
                secure_server_s=res.server_seconds, dropout_server_s=dropped.server_seconds,
                max_abs_error=err))

    print("# update shapes of builtin_cnn (random init, shapes only); random deltas N(0, 0.01), "
          "counts 100..999; secure: X25519 + HKDF-SHA256 + ChaCha20 masks, Shamir over 2^521-1, "
          "threshold n//2+1, clip 1.0, no dropouts except in the 10% dropped column")
    print(f"{'update':>6} {'values':>7} {'n':>4} {'plain MB':>9} {'secure MB':>10} {'ratio':>6} "
          f"{'up ratio':>8} {'client s plain':>14} {'client s secure':>15} {'server s plain':>14} "
          f"{'server s secure':>15} {'10% dropped':>11} {'max |err|':>9}")
    for r in rows:
        print(f"{r['update']:>6} {r['values']:>7} {r['clients']:>4} {r['plain_bytes'] / 1e6:>9.3f} "
              f"{r['secure_bytes'] / 1e6:>10.3f} {r['secure_bytes'] / r['plain_bytes']:>6.2f} "
              f"{r['secure_up'] / r['plain_bytes']:>8.2f} {r['plain_client_s']:>14.5f} "
              f"{r['secure_client_s']:>15.4f} {r['plain_server_s']:>14.4f} {r['secure_server_s']:>15.4f} "
              f"{r['dropout_server_s']:>11.4f} {r['max_abs_error']:>9.1e}")

    def pick(update: str, n: int) -> dict | None:
        return next((r for r in rows if r["update"] == update and r["clients"] == n), None)

    summary = {}
    for update in args.update:
        for n in args.clients:
            r = pick(update, n)
            suffix = f"_{n}" if update == "head" else f"_{update}_{n}"
            summary[f"bytes_overhead{suffix}"] = round(r["secure_bytes"] / r["plain_bytes"], 3)
            summary[f"upload_overhead{suffix}"] = round(r["secure_up"] / r["plain_bytes"], 3)
            summary[f"client_seconds{suffix}"] = round(r["secure_client_s"], 4)
            summary[f"plain_client_seconds{suffix}"] = round(r["plain_client_s"], 5)
            summary[f"server_seconds{suffix}"] = round(r["secure_server_s"], 4)
            summary[f"server_seconds_10pct_dropped{suffix}"] = round(r["dropout_server_s"], 4)
    summary["max_abs_error"] = max(r["max_abs_error"] for r in rows)
    if args.flower_clients:
        shapes = update_shapes("head")
        print("# Flower SecAgg+ (the deployment's): bytes per node and round, head update "
              f"({sum(int(np.prod(s)) for s in shapes)} values); in-process protocol and plain FedAvg "
              "for the same updates")
        print(f"{'n':>4} {'plain up':>9} {'in-proc up':>10} {'in-proc down':>12} {'SecAgg+ up':>10} "
              f"{'SecAgg+ down':>12} {'SecAgg+/in-proc up':>18} {'max |err|':>9} {'seconds':>7}")
        for n in args.flower_clients:
            rng = np.random.default_rng([args.seed, n])
            updates = [[rng.normal(0, 0.01, s).astype(np.float32) for s in shapes] for _ in range(n)]
            counts = rng.integers(100, 1000, n).tolist()
            plain = aggregation.fedavg(updates, counts)
            res = secure_agg.secure_aggregate(updates, counts, clip=1.0)
            t0 = time.perf_counter()
            flower = secaggplus_round(updates, counts)
            seconds = time.perf_counter() - t0
            err = max(float(np.abs(a - b).max()) for a, b in zip(flower.mean, plain))
            row = dict(plain_up=compression.dense_nbytes(updates[0]),
                       inprocess_up=res.nbytes(direction="up") / n,
                       inprocess_down=res.nbytes(direction="down") / n,
                       secaggplus_up=flower.bytes_up / n, secaggplus_down=flower.bytes_down / n)
            print(f"{n:>4} {row['plain_up']:>9.0f} {row['inprocess_up']:>10.0f} "
                  f"{row['inprocess_down']:>12.0f} {row['secaggplus_up']:>10.0f} "
                  f"{row['secaggplus_down']:>12.0f} {row['secaggplus_up'] / row['inprocess_up']:>18.2f} "
                  f"{err:>9.1e} {seconds:>7.2f}")
            for key, value in row.items():
                summary[f"{key}_bytes_per_node_{n}"] = round(value)
            summary[f"secaggplus_max_abs_error_{n}"] = err
            summary[f"secaggplus_seconds_in_process_{n}"] = round(seconds, 3)
    print(json.dumps(summary))


def secaggplus_round(updates, counts):
    """One round of the deployment's SecAgg+ (``server_app.FlowerClients.train_summed``) over
    nodes that answer in process with the given ``updates`` and example ``counts``: its
    ``round.Summed`` (weighted mean and bytes)."""
    import copy

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
    from fedtl_deploy import server_app
    from flwr.app import Context, Message, RecordDict
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    from flwr.compat.common.recorddict_compat import fitres_to_recorddict
    from flwr.supercore.task_identity import TaskIdentity

    from fedtl_helpers.core.config import ExperimentConfig
    from fedtl_helpers.federation.round import Payload, RoundStreams

    # What Flower sets in a ServerApp process before messages are made (as the tests do).
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    n = len(updates)
    # The deployment's least threshold is 3 (stages.SECAGG_MIN_THRESHOLD); message sizes do not
    # depend on it.
    config = ExperimentConfig(num_clients=n, n_train=int(sum(counts)), secure_aggregation=True,
                              secagg_clip=1.0, secagg_threshold=max(3, n // 2 + 1), randomness="secure")

    def node(k):
        def fit(msg, context):  # what the ClientApp returns for secaggplus_mod to mask
            res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(updates[k]), counts[k],
                         {"partition-id": k, "num-examples": counts[k], "train-loss": 0.0,
                          "client-seconds": 0.0})
            return Message(fitres_to_recorddict(res, keep_input=False), reply_to=msg)
        return fit

    class Nodes:  # the network: each message copied, as serialisation would
        contexts = {100 + k: Context(run_id=1, node_id=100 + k, node_config={}, state=RecordDict(),
                                     run_config={}) for k in range(n)}

        def send_and_receive(self, messages, timeout=None):
            out = []
            for m in messages:
                nid = m.metadata.dst_node_id
                copied = Message(copy.deepcopy(m.content), nid, m.metadata.message_type,
                                 group_id=m.metadata.group_id)
                out.append(secaggplus_mod(copied, self.contexts[nid], node(nid - 100)))
            return out

    clients = server_app.FlowerClients(Nodes(), {k: 100 + k for k in range(n)}, None, 60.0, secure=config)
    like = [np.zeros_like(t) for t in updates[0]]
    return clients.train_summed([Payload(k, like, False) for k in range(n)], RoundStreams(0, 1))


if __name__ == "__main__":
    main()
