# %% [markdown]
# # Solutions to the exercises
#
# One section per chapter. Each solution runs, like every chapter, when the
# book is built and when it is tested, so the answers below are what the code
# printed and drew in this build. Try the exercise before you read its
# solution: most of them take minutes, and the time you spend stuck is where
# the learning happens.
