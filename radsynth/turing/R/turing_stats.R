# Statistics of the clinical Turing test (paper, Methods "Statistical analysis"),
# sourced by radsynth/turing/stats.py through rpy2. Base R only: Debian's R has no irr or
# DescTools package, so Fleiss' kappa is written out here.

# Fleiss' kappa for `counts`, a subjects x categories matrix whose entry is the number
# of raters who put the subject in that category (Fleiss 1971, eqs. 2-9). The standard
# error is the one under the null hypothesis of no agreement, in the corrected form of
# Fleiss, Nee & Landis (1979); z = kappa / se0 and a two-sided normal p-value.
fleiss_kappa <- function(counts) {
  counts <- as.matrix(counts)
  if (nrow(counts) < 1) stop("fleiss_kappa: no subjects")
  raters_per_subject <- rowSums(counts)
  if (any(raters_per_subject != raters_per_subject[1])) {
    stop("fleiss_kappa: every subject needs the same number of raters")
  }
  m <- raters_per_subject[1]
  if (m < 2) stop("fleiss_kappa: needs at least 2 raters per subject")
  n_subjects <- nrow(counts)
  p_j <- colSums(counts) / (n_subjects * m)
  p_observed <- mean((rowSums(counts^2) - m) / (m * (m - 1)))
  p_expected <- sum(p_j^2)
  kappa <- (p_observed - p_expected) / (1 - p_expected)
  pq <- p_j * (1 - p_j)
  se0 <- sqrt(2 / (n_subjects * m * (m - 1))) *
    sqrt(sum(pq)^2 - sum(pq * (1 - 2 * p_j))) / sum(pq)
  z <- kappa / se0
  list(kappa = kappa, se0 = se0, z = z, p_value = 2 * pnorm(-abs(z)),
       n_subjects = n_subjects, n_raters = as.integer(m), n_categories = ncol(counts),
       p_observed = p_observed, p_expected = p_expected)
}

# Accuracy of picking the real image, exact (Clopper-Pearson) CI and the two-sided exact
# binomial test against the chance rate.
identification_test <- function(n_correct, n_trials, chance, conf_level) {
  test <- binom.test(n_correct, n_trials, p = chance, alternative = "two.sided",
                     conf.level = conf_level)
  list(n_correct = n_correct, n_trials = n_trials, accuracy = unname(test$estimate),
       ci_low = test$conf.int[1], ci_high = test$conf.int[2], conf_level = conf_level,
       chance = chance, p_value = test$p.value, method = test$method)
}

# Paired two-sided Wilcoxon signed-rank test with R's defaults (exact = NULL: exact when
# n < 50 without ties or zeros; correct = TRUE), the differences ranked at `digits_rank`
# significant digits, recording what R actually did.
paired_signed_rank <- function(reference, other, digits_rank) {
  caught <- character(0)
  test <- withCallingHandlers(
    wilcox.test(reference, other, paired = TRUE, alternative = "two.sided",
                exact = NULL, correct = TRUE, digits.rank = digits_rank),
    warning = function(w) {
      caught <<- c(caught, conditionMessage(w))
      invokeRestart("muffleWarning")
    }
  )
  list(n_pairs = length(reference), n_nonzero = sum(reference - other != 0),
       digits_rank = digits_rank, statistic_v = unname(test$statistic),
       p_value = test$p.value, method = test$method,
       exact = grepl("exact", test$method, fixed = TRUE),
       continuity_correction = grepl("continuity correction", test$method, fixed = TRUE),
       warnings = paste(caught, collapse = "; "))
}

# wilcox.test's own default digits.rank (Inf since R 4.0.0, so also in the paper's R 4.4.2):
# read from R rather than restated, so the primary analysis is whatever R does by default.
r_default_digits_rank <- function() {
  eval(formals(getS3method("wilcox.test", "default"))$digits.rank)
}

# Signed-rank tests of the reference group against every other group (rater x group matrix
# of means), Holm-adjusted among themselves.
signed_rank_tests <- function(means, reference_group, digits_rank) {
  others <- setdiff(sort(colnames(means)), reference_group)
  tests <- lapply(others, function(g) {
    paired_signed_rank(means[, reference_group], means[, g], digits_rank)
  })
  tests <- do.call(rbind.data.frame, c(tests, stringsAsFactors = FALSE))
  tests <- cbind(data.frame(reference = reference_group, group = others), tests)
  tests$p_holm <- p.adjust(tests$p_value, method = "holm")
  tests
}

# Each rater's mean rating of each group, as a rater x group matrix.
per_rater_means <- function(rater, group, rating) {
  tapply(rating, list(rater, group), mean)
}

# Everything the paper reports, from the tidy ratings joined to the key's groups: the tests at
# R's default digits.rank, and again at `sensitivity_digits_rank` as a sensitivity analysis.
# A pick is right when it is the `real_group` image, whichever group the rating tests compare
# against (`reference_group`).
turing_statistics <- function(rater, quartet, position, group, chosen_real, rating,
                              positions, real_group, reference_group, chance, conf_level,
                              sensitivity_digits_rank) {
  chosen <- chosen_real == 1
  correct <- group[chosen] == real_group
  by_position <- table(factor(quartet[chosen]), factor(position[chosen], levels = positions))
  by_correct <- table(factor(quartet[chosen]), factor(correct, levels = c(TRUE, FALSE)))
  means <- per_rater_means(rater, group, rating)
  list(
    identification = identification_test(sum(correct), length(correct), chance, conf_level),
    kappa_position = fleiss_kappa(by_position),
    kappa_correct = fleiss_kappa(by_correct),
    per_rater_means = data.frame(rater = rep(rownames(means), times = ncol(means)),
                                 group = rep(colnames(means), each = nrow(means)),
                                 mean_rating = as.vector(means)),
    group_means = data.frame(group = colnames(means), mean_rating = unname(colMeans(means))),
    tests = signed_rank_tests(means, reference_group, r_default_digits_rank()),
    sensitivity_tests = signed_rank_tests(means, reference_group, sensitivity_digits_rank),
    r_version = R.version.string
  )
}
