"""Device simulator: a seeded security-services estate, its MQTT traffic and a publisher.

``noc simulate`` seeds the registry with the estate, then publishes the traffic.
"""
