# %% [markdown]
# # Summary
#
# You can now say what a validation loss is worth. Per character, in
# nats or in bits, it compares models whatever their tokenizers, and in
# bits it is the size of the text coded with the model. Beside it stand
# the baselines you built from scratch on the same split: a uniform
# guess, character frequencies, an add-k bigram, n-grams to order ten
# with Witten-Bell and interpolated Kneser-Ney smoothing, and the
# compressors of Python's standard library primed with the training
# text. You trained the book's own model, the `small` preset, in the
# budget this machine affords, and read off its curve where it passes
# each baseline and how far the best n-gram lies. You put an interval on
# its loss from the text and a spread from the seed, the two yardsticks
# any claim that one model beats another has to clear. And you took the
# model apart: where
# in the window its loss falls, which characters carry it, whether its
# probabilities mean what they say, and how much of what it writes it
# copied.
#
# What went into `mlxllm.evaluate`:
#
# - the baselines: `NGramCounts` and `NGramModel` (add-k, Witten-Bell,
#   Kneser-Ney), `by_order`, `compressor_bits_per_char`, and
#   `baselines(train, text, max_order)`, which fits and scores them all;
# - the loss and its interval: `token_losses` (every token's loss, window
#   by window), `bootstrap_ratios` and `bootstrap_interval`, and
#   `score_text(model, tokenizer, text)`, which returns an `Estimate`;
# - where the loss is: `char_classes` and `speech_openers`,
#   `top_predictions`, `calibration_table` and
#   `expected_calibration_error`;
# - memorisation: `match_lengths`, `longest_match` and
#   `seen_ngram_share`.
#
# And the command line has `mlxllm eval --checkpoint DIR [--text FILE]`,
# and a third preset, `mlxllm train --preset small`, for the model this
# chapter trained.
