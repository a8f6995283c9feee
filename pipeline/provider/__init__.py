"""WaveSpeed's REST API: the httpx client, its data models, retry decisions and webhooks."""
