DROP MODEL IF EXISTS `analytics.churn`;

DROP MODEL `analytics.reviews`;
