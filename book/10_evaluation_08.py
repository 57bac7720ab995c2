# %% [markdown]
# # Exercises
#
# 1. ★ Read the small model's loss as a file size: how many bytes would
#    the validation split take, coded with the model at its loss in bits
#    per character? Compare with the files zlib, bz2 and lzma write for
#    the same text, alone and primed with the training text.
# 2. ★★ Modified Kneser-Ney (Chen & Goodman, 1998) subtracts one of
#    three discounts, for n-grams seen once, twice, and three times or
#    more. Add it as a fourth smoothing beside the section's and draw its
#    validation loss by order against interpolated Kneser-Ney's.
# 3. ★★ Fit the best Kneser-Ney n-gram and bz2 on the first 10%, 25%,
#    50% and all of the training text and score each on the validation
#    split. Which baseline needs more text, and where do they cross?
# 4. ★★ Score the validation split so that every token sees at least
#    half a context: slide the window by half its length and keep only
#    the loss of each window's second half. How far below the
#    non-overlapping figure is it, and how does it compare with the
#    mean over the last half of positions in @fig-loss-by-position?
# 5. ★★ Temperature scaling (Guo et al., 2017): find the one temperature
#    that minimises the loss on the first half of the validation split,
#    then report the loss and the expected calibration error on the
#    second half with and without it.
# 6. ★★ Extraction by prompting (Carlini et al., 2023): prompt the small
#    model with the first 16, 64 and 128 characters of 50 passages from
#    the training text and 50 from the validation text, decode 50
#    characters greedily, and count how many match the true
#    continuation. Does the model recite what it was trained on more
#    than what it was not?
# 7. ★★★ Matching statistics from a suffix array: sort the suffixes of
#    the training text with numpy (prefix doubling), answer each position
#    of a sample by binary search, and check the result against
#    `match_lengths`. What does building the array cost, and what does a
#    position cost then?
