"""medeid: medical-scene data de-identification pipelines on Ray Data."""
