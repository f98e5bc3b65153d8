"""The guarded downloader: address policy, circuit breaker, retry and the byte budget."""
