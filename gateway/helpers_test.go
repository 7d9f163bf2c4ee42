package gateway

import "github.com/prometheus/prometheus/model/relabel"

type relabelConfig = relabel.Config

func defaultRegex() relabel.Regexp { return relabel.DefaultRelabelConfig.Regex }
