# %% [markdown]
# # Bibliography
#
# The works the chapters cite as (Author, year), in alphabetical order. Figures quoted
# from these sources are labelled as theirs in the text; every other number in the
# book comes from this build's own runs.
#
# - **Ba et al., 2016.** Jimmy Lei Ba, Jamie Ryan Kiros and Geoffrey E. Hinton. *Layer
#   Normalization.* arXiv:1607.06450, 2016.
# - **Bahdanau et al., 2015.** Dzmitry Bahdanau, Kyunghyun Cho and Yoshua Bengio.
#   *Neural Machine Translation by Jointly Learning to Align and Translate.* ICLR
#   2015. arXiv:1409.0473.
# - **Bradbury et al., 2018.** James Bradbury, Roy Frostig, Peter Hawkins, Matthew
#   James Johnson, Chris Leary, Dougal Maclaurin, George Necula, Adam Paszke, Jake
#   VanderPlas, Skye Wanderman-Milne and Qiao Zhang. *JAX: composable transformations
#   of Python+NumPy programs.* Software, 2018. <https://github.com/jax-ml/jax>
# - **Brown et al., 2020.** Tom B. Brown et al. *Language Models are Few-Shot
#   Learners.* Advances in Neural Information Processing Systems 33 (NeurIPS 2020).
#   arXiv:2005.14165.
# - **Burrows & Wheeler, 1994.** Michael Burrows and David J. Wheeler. *A
#   Block-sorting Lossless Data Compression Algorithm.* Digital Systems Research
#   Center, Research Report 124, 1994. The transform inside bzip2.
# - **Carlini et al., 2021.** Nicholas Carlini, Florian Tramèr, Eric Wallace, Matthew
#   Jagielski, Ariel Herbert-Voss, Katherine Lee, Adam Roberts, Tom Brown, Dawn Song,
#   Úlfar Erlingsson, Alina Oprea and Colin Raffel. *Extracting Training Data from
#   Large Language Models.* 30th USENIX Security Symposium, 2021. arXiv:2012.07805.
# - **Carlini et al., 2023.** Nicholas Carlini, Daphne Ippolito, Matthew Jagielski,
#   Katherine Lee, Florian Tramèr and Chiyuan Zhang. *Quantifying Memorization Across
#   Neural Language Models.* International Conference on Learning Representations
#   (ICLR 2023). arXiv:2202.07646.
# - **Chang & Lawler, 1994.** William I. Chang and Eugene L. Lawler. *Sublinear
#   Approximate String Matching and Biological Applications.* Algorithmica 12, 1994.
#   Where matching statistics are defined.
# - **Chen & Goodman, 1998.** Stanley F. Chen and Joshua Goodman. *An Empirical
#   Study of Smoothing Techniques for Language Modeling.* Technical Report TR-10-98,
#   Harvard University, 1998.
# - **Chen et al., 2016.** Tianqi Chen, Bing Xu, Chiyuan Zhang and Carlos Guestrin.
#   *Training Deep Nets with Sublinear Memory Cost.* arXiv:1604.06174, 2016.
# - **Chen et al., 2023.** Shouyuan Chen, Sherman Wong, Liangjian Chen and Yuandong
#   Tian. *Extending Context Window of Large Language Models via Positional
#   Interpolation.* arXiv:2306.15595, 2023.
# - **Dao et al., 2022.** Tri Dao, Daniel Y. Fu, Stefano Ermon, Atri Rudra and
#   Christopher Ré. *FlashAttention: Fast and Memory-Efficient Exact Attention with
#   IO-Awareness.* NeurIPS 2022. arXiv:2205.14135.
# - **Deutsch, 1996.** L. Peter Deutsch. *DEFLATE Compressed Data Format
#   Specification version 1.3.* RFC 1951, 1996. The format zlib writes.
# - **Efron, 1979.** Bradley Efron. *Bootstrap Methods: Another Look at the
#   Jackknife.* The Annals of Statistics 7(1), 1979.
# - **Fan et al., 2018.** Angela Fan, Mike Lewis and Yann Dauphin. *Hierarchical
#   Neural Story Generation.* ACL 2018. arXiv:1805.04833.
# - **Gage, 1994.** Philip Gage. *A New Algorithm for Data Compression.* The C Users
#   Journal 12(2), 1994. The original byte pair encoding, for compression.
# - **Goyal et al., 2017.** Priya Goyal, Piotr Dollár, Ross Girshick, Pieter
#   Noordhuis, Lukasz Wesolowski, Aapo Kyrola, Andrew Tulloch, Yangqing Jia and Kaiming
#   He. *Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour.*
#   arXiv:1706.02677, 2017.
# - **Guo et al., 2017.** Chuan Guo, Geoff Pleiss, Yu Sun and Kilian Q. Weinberger.
#   *On Calibration of Modern Neural Networks.* International Conference on Machine
#   Learning (ICML 2017). arXiv:1706.04599.
# - **Gupta et al., 2015.** Suyog Gupta, Ankur Agrawal, Kailash Gopalakrishnan and
#   Pritish Narayanan. *Deep Learning with Limited Numerical Precision.* International
#   Conference on Machine Learning (ICML 2015). arXiv:1502.02551.
# - **Hannun et al., 2023.** Awni Hannun, Jagrit Digani, Angelos Katharopoulos and
#   Ronan Collobert. *MLX: Efficient and flexible machine learning on Apple silicon.*
#   Software, 2023. <https://github.com/ml-explore/mlx>
# - **Hoffmann et al., 2022.** Jordan Hoffmann et al. *Training Compute-Optimal Large
#   Language Models.* Advances in Neural Information Processing Systems 35 (NeurIPS
#   2022). arXiv:2203.15556.
# - **Holtzman et al., 2020.** Ari Holtzman, Jan Buys, Li Du, Maxwell Forbes and
#   Yejin Choi. *The Curious Case of Neural Text Degeneration.* International
#   Conference on Learning Representations (ICLR 2020). arXiv:1904.09751.
# - **Hendrycks & Gimpel, 2016.** Dan Hendrycks and Kevin Gimpel. *Gaussian Error
#   Linear Units (GELUs).* arXiv:1606.08415, 2016.
# - **Intel, 2020.** *Thunderbolt 4* specification: 40 Gb/s links. **Intel, 2023.**
#   *Thunderbolt 5* specification: 80 Gb/s in each direction (120 Gb/s one way in
#   its boost mode). Chapter 12 uses 40 and 80 Gb/s as nominal rates.
# - **Kalamkar et al., 2019.** Dhiraj Kalamkar et al. *A Study of BFLOAT16 for Deep
#   Learning Training.* arXiv:1905.12322, 2019.
# - **Kaplan et al., 2020.** Jared Kaplan et al. *Scaling Laws for Neural Language
#   Models.* arXiv:2001.08361, 2020.
# - **Karpathy, 2015.** Andrej Karpathy. *char-rnn: Multi-layer Recurrent Neural
#   Networks for character-level language models.* Software, 2015; the source of the
#   Tiny Shakespeare corpus. <https://github.com/karpathy/char-rnn>
# - **Karpathy, 2022.** Andrej Karpathy. *nanoGPT: the simplest, fastest repository
#   for training/finetuning medium-sized GPTs.* Software, 2022.
#   <https://github.com/karpathy/nanoGPT>
# - **Keskar et al., 2019.** Nitish Shirish Keskar, Bryan McCann, Lav R. Varshney,
#   Caiming Xiong and Richard Socher. *CTRL: A Conditional Transformer Language
#   Model for Controllable Generation.* arXiv:1909.05858, 2019.
# - **Kingma & Ba, 2015.** Diederik P. Kingma and Jimmy Ba. *Adam: A Method for
#   Stochastic Optimization.* International Conference on Learning Representations
#   (ICLR 2015). arXiv:1412.6980.
# - **Kneser & Ney, 1995.** Reinhard Kneser and Hermann Ney. *Improved
#   Backing-off for M-gram Language Modeling.* IEEE International Conference on
#   Acoustics, Speech and Signal Processing (ICASSP 1995), 181–184.
# - **Korthikanti et al., 2022.** Vijay Korthikanti, Jared Casper, Sangkug Lym,
#   Lawrence McAfee, Michael Andersch, Mohammad Shoeybi and Bryan Catanzaro. *Reducing
#   Activation Recomputation in Large Transformer Models.* arXiv:2205.05198, 2022
#   (MLSys 2023).
# - **Kudo, 2018.** Taku Kudo. *Subword Regularization: Improving Neural Network
#   Translation Models with Multiple Subword Candidates.* ACL 2018. arXiv:1804.10959.
# - **Kudo & Richardson, 2018.** Taku Kudo and John Richardson. *SentencePiece: A
#   simple and language independent subword tokenizer and detokenizer for Neural Text
#   Processing.* EMNLP 2018 (system demonstrations). arXiv:1808.06226.
# - **Lee et al., 2022.** Katherine Lee, Daphne Ippolito, Andrew Nystrom, Chiyuan
#   Zhang, Douglas Eck, Chris Callison-Burch and Nicholas Carlini. *Deduplicating
#   Training Data Makes Language Models Better.* Proceedings of the 60th Annual
#   Meeting of the Association for Computational Linguistics (ACL 2022).
#   arXiv:2107.06499.
# - **Leviathan et al., 2023.** Yaniv Leviathan, Matan Kalman and Yossi Matias. *Fast
#   Inference from Transformers via Speculative Decoding.* International Conference on
#   Machine Learning (ICML 2023). arXiv:2211.17192.
# - **Liu et al., 2020.** Liyuan Liu, Haoming Jiang, Pengcheng He, Weizhu Chen,
#   Xiaodong Liu, Jianfeng Gao and Jiawei Han. *On the Variance of the Adaptive
#   Learning Rate and Beyond.* International Conference on Learning Representations
#   (ICLR 2020). arXiv:1908.03265. Why Adam needs a warm-up.
# - **Loshchilov & Hutter, 2017.** Ilya Loshchilov and Frank Hutter. *SGDR:
#   Stochastic Gradient Descent with Warm Restarts.* International Conference on
#   Learning Representations (ICLR 2017). arXiv:1608.03983.
# - **Loshchilov & Hutter, 2019.** Ilya Loshchilov and Frank Hutter. *Decoupled
#   Weight Decay Regularization.* International Conference on Learning
#   Representations (ICLR 2019). arXiv:1711.05101.
# - **Malladi et al., 2022.** Sadhika Malladi, Kaifeng Lyu, Abhishek Panigrahi and
#   Sanjeev Arora. *On the SDEs and Scaling Rules for Adaptive Gradient Algorithms.*
#   NeurIPS 2022. arXiv:2205.10287.
# - **Manber & Myers, 1993.** Udi Manber and Gene Myers. *Suffix Arrays: A New Method
#   for On-Line String Searches.* SIAM Journal on Computing 22(5), 1993. Suffix
#   arrays, built by prefix doubling.
# - **McCoy et al., 2023.** R. Thomas McCoy, Paul Smolensky, Tal Linzen, Jianfeng Gao
#   and Asli Celikyilmaz. *How Much Do Language Models Copy From Their Training Data?
#   Evaluating Linguistic Novelty in Text Generation Using RAVEN.* Transactions of
#   the Association for Computational Linguistics 11, 2023. arXiv:2111.09509.
# - **Micikevicius et al., 2018.** Paulius Micikevicius et al. *Mixed Precision
#   Training.* International Conference on Learning Representations (ICLR 2018).
#   arXiv:1710.03740.
# - **MLX documentation.** *Distributed Communication* and *Launching Distributed
#   Programs.* <https://ml-explore.github.io/mlx/build/html/usage/distributed.html>,
#   read 2026-12-08. The backends (ring over TCP, JACCL with RDMA over Thunderbolt,
#   MPI, NCCL) and `mlx.launch`.
# - **Muennighoff et al., 2023.** Niklas Muennighoff, Alexander M. Rush, Boaz Barak,
#   Teven Le Scao, Aleksandra Piktus, Nouamane Tazi, Sampo Pyysalo, Thomas Wolf and
#   Colin Raffel. *Scaling Data-Constrained Language Models.* Advances in Neural
#   Information Processing Systems 36 (NeurIPS 2023). arXiv:2305.16264.
# - **Naeini et al., 2015.** Mahdi Pakdaman Naeini, Gregory F. Cooper and Milos
#   Hauskrecht. *Obtaining Well Calibrated Probabilities Using Bayesian Binning.*
#   AAAI Conference on Artificial Intelligence (AAAI 2015).
# - **Nguyen et al., 2024.** Minh Nguyen, Andrew Baker, Clement Neo, Allen Roush,
#   Andreas Kirsch and Ravid Shwartz-Ziv. *Turning Up the Heat: Min-p Sampling for
#   Creative and Coherent LLM Outputs.* arXiv:2407.01082, 2024 (ICLR 2025).
# - **Okabe & Ito, 2008.** Masataka Okabe and Kei Ito. *Color Universal Design
#   (CUD): How to make figures and presentations that are friendly to colorblind
#   people.* 2008. The palette of every figure in this book.
# - **Patarasuk & Yuan, 2009.** Pitch Patarasuk and Xin Yuan. *Bandwidth Optimal
#   All-reduce Algorithms for Clusters of Workstations.* Journal of Parallel and
#   Distributed Computing 69(2), 2009.
# - **Pascanu et al., 2013.** Razvan Pascanu, Tomas Mikolov and Yoshua Bengio. *On
#   the difficulty of training Recurrent Neural Networks.* International Conference
#   on Machine Learning (ICML 2013). arXiv:1211.5063.
# - **Polyak & Juditsky, 1992.** Boris T. Polyak and Anatoli B. Juditsky.
#   *Acceleration of Stochastic Approximation by Averaging.* SIAM Journal on Control
#   and Optimization 30(4), 1992.
# - **Pope et al., 2022.** Reiner Pope, Sholto Douglas, Aakanksha Chowdhery, Jacob
#   Devlin, James Bradbury, Anselm Levskaya, Jonathan Heek, Kefan Xiao, Shivani
#   Agrawal and Jeff Dean. *Efficiently Scaling Transformer Inference.*
#   arXiv:2211.05102, 2022 (MLSys 2023).
# - **Press & Wolf, 2017.** Ofir Press and Lior Wolf. *Using the Output Embedding to
#   Improve Language Models.* EACL 2017. arXiv:1608.05859.
# - **Press et al., 2021.** Ofir Press, Noah A. Smith and Mike Lewis. *Shortformer:
#   Better Language Modeling using Shorter Inputs.* ACL-IJCNLP 2021.
#   arXiv:2012.15832. Where the early token curse is named.
# - **Raschka, 2024.** Sebastian Raschka. *Build a Large Language Model (From
#   Scratch).* Manning, 2024; its code repository's bonus material on the KV cache,
#   ch04/03_kv-cache. <https://github.com/rasbt/LLMs-from-scratch>
# - **Radford et al., 2019.** Alec Radford, Jeffrey Wu, Rewon Child, David Luan, Dario
#   Amodei and Ilya Sutskever. *Language Models are Unsupervised Multitask Learners.*
#   OpenAI, 2019 (the GPT-2 report; its byte-level BPE and split pattern).
# - **Rajbhandari et al., 2020.** Samyam Rajbhandari, Jeff Rasley, Olatunji Ruwase
#   and Yuxiong He. *ZeRO: Memory Optimizations Toward Training Trillion Parameter
#   Models.* SC20. arXiv:1910.02054.
# - **Sanathanan & Koerner, 1963.** C. K. Sanathanan and J. Koerner. *Transfer
#   Function Synthesis as a Ratio of Two Complex Polynomials.* IEEE Transactions on
#   Automatic Control 8(1), 1963, 56–58. The reweighted linear least-squares fit of a
#   rational function.
# - **Sennrich et al., 2016.** Rico Sennrich, Barry Haddow and Alexandra Birch.
#   *Neural Machine Translation of Rare Words with Subword Units.* ACL 2016.
#   arXiv:1508.07909.
# - **Shannon, 1948.** Claude E. Shannon. *A Mathematical Theory of Communication.*
#   Bell System Technical Journal 27, 1948.
# - **Shazeer, 2020.** Noam Shazeer. *GLU Variants Improve Transformer.*
#   arXiv:2002.05202, 2020.
# - **Smith, 2017.** Leslie N. Smith. *Cyclical Learning Rates for Training Neural
#   Networks.* IEEE Winter Conference on Applications of Computer Vision (WACV 2017).
#   arXiv:1506.01186. The learning-rate range test.
# - **Srivastava et al., 2014.** Nitish Srivastava, Geoffrey Hinton, Alex Krizhevsky,
#   Ilya Sutskever and Ruslan Salakhutdinov. *Dropout: A Simple Way to Prevent Neural
#   Networks from Overfitting.* Journal of Machine Learning Research 15, 2014.
# - **Su et al., 2021.** Jianlin Su, Yu Lu, Shengfeng Pan, Ahmed Murtadha, Bo Wen and
#   Yunfeng Liu. *RoFormer: Enhanced Transformer with Rotary Position Embedding.*
#   arXiv:2104.09864, 2021.
# - **Vaswani et al., 2017.** Ashish Vaswani, Noam Shazeer, Niki Parmar, Jakob
#   Uszkoreit, Llion Jones, Aidan N. Gomez, Łukasz Kaiser and Illia Polosukhin.
#   *Attention Is All You Need.* Advances in Neural Information Processing Systems 30
#   (NeurIPS 2017). arXiv:1706.03762.
# - **Witten et al., 1987.** Ian H. Witten, Radford M. Neal and John G. Cleary.
#   *Arithmetic Coding for Data Compression.* Communications of the ACM 30(6), 1987.
# - **Witten & Bell, 1991.** Ian H. Witten and Timothy C. Bell. *The Zero-Frequency
#   Problem: Estimating the Probabilities of Novel Events in Adaptive Text
#   Compression.* IEEE Transactions on Information Theory 37(4), 1991, 1085–1094.
# - **Xiong et al., 2020.** Ruibin Xiong et al. *On Layer Normalization in the
#   Transformer Architecture.* ICML 2020. arXiv:2002.04745.
# - **Zhang & Sennrich, 2019.** Biao Zhang and Rico Sennrich. *Root Mean Square Layer
#   Normalization.* NeurIPS 2019. arXiv:1910.07467.
