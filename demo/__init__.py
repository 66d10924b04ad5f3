"""The offline demo: a simulated OpenAI upstream and a workload driven with the openai SDK (extra: runtap[demo])."""
