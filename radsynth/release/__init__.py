"""Release stage (to come): the figshare package, its privacy gate and the uploader."""
