"""The command line: flags (`flags`) -> objects (`objects`) -> the library's tracked fit or comparison -> printed
(`main`); the upload of tracking data saved while the store was down (`tracking`)."""
