"""The ServerApp: plain Flower FedAvg. The market lines wrap the strategy in `MarketStrategy`.

With a market project, each Flower round is one market round: the strategy sends the round's
global model from the chain, waits for the reveal deadline, runs the market's own round (validation,
filters, robust rule, scoring, rewards, publish, finalize on chain) and gives Flower the model the
market published; FedAvg's own averaging is never used (flowerbridge.strategy).
"""

from __future__ import annotations

import json

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from flowerbridge import MarketStrategy
from marketflower import task

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=3, min_evaluate_nodes=3,
                      min_available_nodes=3)
    if int(cfg["market-project"]) or cfg["market-project-file"]:
        # the market's rounds: their number and the initial model come from the project
        strategy = MarketStrategy.from_run_config(strategy, cfg)
    x, y = task.load_test()

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = task.new_model()
        model.load_state_dict(arrays.to_torch_state_dict())
        accuracy, loss = task.test(model, x, y)
        return MetricRecord({"accuracy": accuracy, "loss": loss})

    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(task.new_model().state_dict()),
                            num_rounds=int(cfg["num-server-rounds"]), train_config=ConfigRecord({}), evaluate_fn=central)
    rounds = max(result.evaluate_metrics_serverapp, default=0)
    final = result.evaluate_metrics_serverapp.get(rounds)
    # one machine-readable line for scripts (the test and the benchmark read it from the run's log)
    print("MARKETFLOWER_RESULT " + json.dumps({"rounds": rounds, "accuracy": final["accuracy"] if final else None}))
