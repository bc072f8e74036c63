"""Probes that split each transaction into network and server time, host and VM metrics, resource
advice. (Not built yet.)"""
