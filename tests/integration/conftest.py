"""Fixtures for the pipeline's integration tests."""

from __future__ import annotations

import pytest

from tests.integration.stack import Stack, stack_settings


@pytest.fixture
def make_stack(tmp_path, redis_url, s3_server, bucket):
    stacks = []

    def make(sandbox, **sections):
        settings = stack_settings(
            sandbox_url=sandbox.url,
            redis_url=redis_url,
            s3_url=s3_server.url,
            bucket=bucket,
            **sections,
        )
        stack = Stack(settings)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()
