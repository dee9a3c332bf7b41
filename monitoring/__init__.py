"""Monitoring tools beside the Prometheus and Grafana config they exercise: shifted image streams and the drift demo."""
