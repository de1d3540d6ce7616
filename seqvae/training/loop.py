"""The training algorithm, in one function that reads top to bottom."""

from __future__ import annotations

from seqvae.progress import progress_bar
from seqvae.training.metrics import progress_figures, summary
from seqvae.training.trainer import Trainer


def run_loop(trainer: Trainer) -> None:
    """Train epoch by epoch from where ``trainer.state`` stands until train.epochs, a budget, the
    plateau rule's last decay or a signal ends the run, or ``trainer.pause_at_step`` this sitting.
    The parts a config chose act inside ``outer_step``, ``validate`` and the checkpoints
    (seqvae.training.parts)."""
    t, state, train = trainer, trainer.state, trainer.config.train
    if t.plateau.done():
        t.say(f"{t.run_dir}: already stopped after {t.plateau.decays} learning-rate decays "
              f"(train.stop_after_decays={train.stop_after_decays})")
    while state.epoch < train.epochs and not t.plateau.done():
        batches = t.epoch_batches()
        bar = progress_bar(total=len(batches), initial=state.batch_in_epoch,
                           desc=f"epoch {state.epoch + 1}/{train.epochs}", disable=not t.progress)
        t.model.train()
        try:
            while state.batch_in_epoch < len(batches):
                t.stop_if_signalled()
                if t.pause_due() or t.budget_spent():
                    break
                beta = t.kl_weight()
                terms, extra = t.outer_step(batches[state.batch_in_epoch], batches, beta)
                state.step += 1
                state.batch_in_epoch += 1
                state.window.add(terms, **extra)
                shown = progress_figures(terms, beta, extra, language_model=t.model.is_language_model)
                bar.set_postfix(shown, refresh=False)
                bar.update(1)  # draws the figures too
                if state.step % train.log_every == 0:
                    t.log_window(beta)
                every = train.checkpoint_every
                if every and state.step % every == 0 and state.batch_in_epoch < len(batches):
                    t.save(t.last_path)  # an epoch's end is checkpointed after its validation
        finally:
            bar.close()
        if state.batch_in_epoch < len(batches):  # a pause or a budget ended the epoch early
            if t.pause_due():
                t.pause()
            else:
                t.stop_at_budget()
            return
        valid = t.validate(epoch_end=True)
        t.say(f"epoch {state.epoch + 1}: valid {summary(valid)}")
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        t.keep_if_best(valid)
        decays_done = t.learning_rate_rule(valid)
        t.save(t.last_path)
        t.stop_if_signalled()
        if decays_done:
            t.say(f"stopped after {t.plateau.decays} learning-rate decays (train.stop_after_decays), epoch {state.epoch}")
            return
