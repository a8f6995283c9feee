"""The sandbox: an offline emulator of WaveSpeed's lipsync-3 API, over real HTTP.

It fetches the inputs by URL, applies the sync_mode for real (pipeline.sandbox.render),
serves a playable output, enforces account limits, injects faults by seed, signs webhooks,
and keeps an audit log of every submit. It never moves lips: it is for plumbing, not looks.
"""
