"""Options shared by every command that has a config, so they read the same everywhere."""

from __future__ import annotations

from collections.abc import Callable

import click

from phi_hpc.errors import UsageError


def config_options(func: Callable) -> Callable:
    """Add ``--config FILE`` and repeatable ``--set key=value`` (see :mod:`phi_hpc.config`)."""
    func = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a config value, e.g. --set optim.lr=3e-4 (repeatable).",
    )(func)
    func = click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="YAML config file (defaults are used for keys it leaves out).",
    )(func)
    return func


def endpoint_options(func: Callable, temperature: float = 1.0) -> Callable:
    """Options of every command that talks to an OpenAI-compatible server."""
    options = [
        click.option(
            "--endpoint",
            metavar="URL",
            help="OpenAI-compatible base URL, e.g. http://gpu-node:8000/v1 (vLLM) or https://api.openai.com/v1.",
        ),
        click.option("--model", "model_name", help="Model name the server expects."),
        click.option(
            "--api-key-env",
            default="OPENAI_API_KEY",
            show_default=True,
            help="Environment variable holding the API key (sent as a Bearer token if set).",
        ),
        click.option("--concurrency", default=8, show_default=True, help="Requests in flight at once."),
        click.option("--timeout", "timeout_s", default=120.0, show_default=True, help="Seconds per request."),
        click.option(
            "--max-retries",
            default=6,
            show_default=True,
            help="Retries of a request after 5xx/429/timeouts (exponential backoff).",
        ),
        click.option("--backoff", "backoff_s", default=1.0, show_default=True, help="First retry wait in seconds."),
        click.option("--temperature", default=temperature, show_default=True),
        click.option("--max-tokens", default=1024, show_default=True, help="Completion length limit."),
        click.option(
            "--price-input",
            "price_input",
            default=0.0,
            show_default=True,
            help="Dollars per million prompt tokens (from each answer's usage), for the cost report.",
        ),
        click.option(
            "--price-output",
            "price_output",
            default=0.0,
            show_default=True,
            help="Dollars per million completion tokens.",
        ),
        click.option("--spend-cap", type=float, help="Stop sending requests once this many dollars are spent."),
        click.option("--token-cap", type=int, help="Stop sending requests once this many tokens are used."),
        click.option(
            "--requests-per-minute",
            "rpm",
            default=0.0,
            show_default=True,
            help="Space requests out to this rate, across all threads (0: no limit).",
        ),
        click.option(
            "--tokens-per-minute",
            "tpm",
            default=0.0,
            show_default=True,
            help="Space requests out to this many (prompt + max) tokens a minute (0: no limit).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def endpoint_config(kwargs: dict):
    from phi_hpc.quality.openai_client import EndpointConfig

    if not kwargs["endpoint"] or not kwargs["model_name"]:
        raise UsageError("--endpoint and --model are required", "e.g. --endpoint http://gpu-node:8000/v1 --model NAME")
    return EndpointConfig(
        base_url=kwargs["endpoint"],
        model=kwargs["model_name"],
        api_key_env=kwargs["api_key_env"],
        timeout_s=kwargs["timeout_s"],
        max_retries=kwargs["max_retries"],
        backoff_s=kwargs["backoff_s"],
        temperature=kwargs["temperature"],
        max_tokens=kwargs["max_tokens"],
        price_input_per_mtok=kwargs["price_input"],
        price_output_per_mtok=kwargs["price_output"],
        spend_cap=kwargs["spend_cap"],
        token_cap=kwargs["token_cap"],
        requests_per_minute=kwargs["rpm"],
        tokens_per_minute=kwargs["tpm"],
    )
