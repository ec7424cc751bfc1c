"""The torch side: the twin model, the lockstep cross-check, the reports and the command."""
