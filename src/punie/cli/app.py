"""The root typer app; each command group lives in its own module."""

from __future__ import annotations

import typer

from punie.cli import (
    agent,
    data,
    demo,
    doctor,
    dpo,
    generate,
    improve,
    models,
    planner,
    planner_learned,
    report,
    serve,
    sweep,
    traces,
    train,
)
from punie.cli.eval import eval_command

app = typer.Typer(
    name="punie",
    help="Fine-tune small local models for your agent's job, and prove it worked.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(models.app, name="models")
app.add_typer(serve.app, name="serve")
app.command("doctor")(doctor.doctor)
app.command("generate")(generate.generate)
app.command("demo")(demo.demo)
app.add_typer(data.app, name="data")
app.command("train")(train.train)
app.command("dpo")(dpo.dpo)
app.command("improve")(improve.improve)
app.command("sweep")(sweep.sweep)
app.command("eval")(eval_command)
app.add_typer(report.app, name="report")
app.add_typer(agent.app, name="agent")
app.add_typer(traces.app, name="traces")
app.add_typer(planner.app, name="planner")
app.command("plan")(planner_learned.plan)
