"""The ClientApp: plain Flower (Message API). The one market line is `mods=[market_mod]`.

Without a market project (`market-project = 0`) the mod passes every message through, so this is
an ordinary Flower client. With one, the mod makes each train reply a market submission: it trains
on the round's global model from the chain, turns the returned weights into the update, seals,
uploads, commits and reveals it, and claims the rewards at the end (flowerbridge.client).
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flowerbridge import market_mod
from marketflower import task

torch.set_num_threads(1)  # several simulated clients share two cores

app = ClientApp(mods=[market_mod])


@app.train()
def train(msg: Message, context: Context) -> Message:
    model = task.new_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    pid, parts = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    x, y = task.load_partition(pid, parts)
    cfg = context.run_config
    server_round = int(msg.content["config"]["server-round"])
    loss = task.train(model, x, y, epochs=int(cfg["local-epochs"]), lr=float(cfg["lr"]),
                      batch_size=int(cfg["batch-size"]), seed=1000 * server_round + pid)
    content = RecordDict({
        "arrays": ArrayRecord(model.state_dict()),
        "metrics": MetricRecord({"train_loss": loss, "num-examples": len(y)}),
    })
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    model = task.new_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = task.load_test()
    accuracy, loss = task.test(model, x, y)
    metrics = MetricRecord({"eval_acc": accuracy, "eval_loss": loss, "num-examples": len(y)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
