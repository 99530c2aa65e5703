"""The bottom layer: config, spaces and specs, policy, preprocessing, messages, env construction, errors."""
