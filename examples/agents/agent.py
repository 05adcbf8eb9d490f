"""A customer-support agent whose tools reach PostgreSQL and Redis only through wirewarden.

Each tool connects with the agent's own token (never a database password) and tells the
gateway which run and which tool call issued the query, in the protocol's own handshake: for
PostgreSQL in the startup packet's `application_name`, for Redis in the `SETNAME` option of
the `HELLO` that authenticates (`HELLO 2 AUTH <user> <token> SETNAME <name>`). The gateway
records it as the session's application in its audit trail, so an auditor can tie every
statement to the agent step that issued it.

Offline (the default, and how the tests run it) a scripted model drives the agent; with
`--model` and OPENAI_API_KEY set, a real model does.

    python3 agent.py --pg-port 6432 --pg-token "$AGENT_TOKEN" [--redis-port 6380 --redis-token ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

import psycopg  # noqa: E402
import redis  # noqa: E402
from agents import Agent, RunConfig, Runner, function_tool  # noqa: E402
from agents.tool_context import ToolContext  # noqa: E402

RUN_ID = uuid.uuid4().hex[:12]
ARGS: argparse.Namespace


def tag(ctx: ToolContext) -> str:
    """What the gateway records as the client's application: run and tool call."""
    return f"agent run={RUN_ID} call={ctx.tool_call_id}"


@function_tool
async def query_crm(ctx: ToolContext, sql: str) -> str:
    """Run one SQL statement against the CRM database and return the rows."""
    try:
        with psycopg.connect(
            host=ARGS.host,
            port=ARGS.pg_port,
            user=ARGS.pg_user,
            password=ARGS.pg_token,
            dbname=ARGS.pg_database,
            sslmode=ARGS.sslmode,
            application_name=tag(ctx),
            autocommit=True,
        ) as conn:
            cur = conn.execute(sql)
            if cur.description is None:
                return f"ok: {cur.statusmessage}"
            cols = [c.name for c in cur.description]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
            return json.dumps(rows, default=str)
    except psycopg.Error as e:
        # A denial is an answer the model should see, not a crash.
        return f"error {e.sqlstate}: {e.diag.message_primary}"


def redis_name(ctx: ToolContext) -> str:
    """The tag as a Redis client name, which may not contain spaces."""
    return tag(ctx).replace(" ", "_")


@function_tool
async def read_cache(ctx: ToolContext, key: str) -> str:
    """Read one key from the session cache."""
    if ARGS.redis_port is None:
        return "error: no cache configured"
    # One connection whose first command is the HELLO that authenticates and names it, so
    # the gateway knows the run and tool call when it opens the session (a CLIENT SETNAME
    # after the login would reach the audit trail only as one more command). redis-py sends
    # nothing of its own on connect when it has no credentials, no client name, no driver
    # info and RESP2; the token goes only in this HELLO.
    r = redis.Redis(
        host=ARGS.host,
        port=ARGS.redis_port,
        single_connection_client=True,
        driver_info=None,
        protocol=2,
        decode_responses=True,
    )
    try:
        r.execute_command(
            "HELLO", 2, "AUTH", ARGS.redis_user, ARGS.redis_token, "SETNAME", redis_name(ctx)
        )
        value = r.get(key)
        return "null" if value is None else value
    except redis.RedisError as e:
        return f"error: {e}"
    finally:
        r.close()


def scripted_model():
    """The offline script: what a model would plausibly do for the task below."""
    from agents.testing import ScriptedModel, assistant_message, function_call

    # One model turn per step; each turn's output is a list of items.
    steps = [
        [function_call("query_crm", {"sql": "SELECT id, name, email, ssn, card FROM customers ORDER BY id LIMIT 3"},
                       call_id="call_lookup")],
        [function_call("query_crm", {"sql": "DROP TABLE customers"}, call_id="call_cleanup")],
    ]
    if ARGS.redis_port is not None:
        steps.append([function_call("read_cache", {"key": "session:1001"}, call_id="call_cache")])
    summary = "I looked up the first customers (sensitive fields arrive masked) and the gateway refused to drop the table"
    if ARGS.redis_port is not None:
        summary += "; I also read the cached session"
    steps.append([assistant_message(summary + ".")])
    return ScriptedModel(steps)


async def main() -> int:
    agent = Agent(
        name="support-agent",
        instructions="You help the support team. Use the tools; never try to change the schema.",
        tools=[query_crm, read_cache],
        model=ARGS.model if ARGS.model else scripted_model(),
    )
    result = await Runner.run(
        agent,
        "Find the first three customers and their cached session, then tidy up the database.",
        run_config=RunConfig(tracing_disabled=True),
    )
    print(f"run {RUN_ID}")
    for item in result.new_items:
        kind = type(item).__name__
        if kind == "ToolCallOutputItem":
            print(f"tool output: {item.output}")
    print(f"final: {result.final_output}")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--pg-port", type=int, required=True)
    p.add_argument("--pg-user", default="support-agent")
    p.add_argument("--pg-database", default="crm")
    p.add_argument("--pg-token", default=os.environ.get("AGENT_PG_TOKEN"))
    p.add_argument("--sslmode", default="prefer")
    p.add_argument("--redis-port", type=int)
    p.add_argument("--redis-user", default="support-agent")
    p.add_argument("--redis-token", default=os.environ.get("AGENT_REDIS_TOKEN"))
    p.add_argument("--model", help="a real model name (needs OPENAI_API_KEY); default: the offline script")
    ARGS = p.parse_args()
    if ARGS.model and not os.environ.get("OPENAI_API_KEY"):
        sys.exit("--model needs OPENAI_API_KEY")
    sys.exit(asyncio.run(main()))
