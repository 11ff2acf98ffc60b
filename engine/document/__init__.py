"""The user's document: the session (tracks, regions, takes, undo commands, save/autosave),
its inputs, stem/mix export and the DAWproject writer. No torch."""
