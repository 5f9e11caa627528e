"""JetStream: the API, the paginated live-state reader, connecting, object specs."""
