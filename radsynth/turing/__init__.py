"""Clinical Turing test: quartets, the offline rating form, ratings, R statistics, figures."""
